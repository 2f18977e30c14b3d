# Sourced by scripts/postgres.sh and scripts/slurm-cluster.sh: a service's fresh state dir.
#
#   new_state_dir GIVEN PREFIX NOTE
#
# sets DIR to GIVEN when that names a dir that does not exist yet (made with mode 700), else
# to a new `mktemp -d` dir named PREFIX.XXXXXXXX (mode 700), whose path is written to NOTE so
# that stop and status find it. `die` is the caller's.
new_state_dir() {
  local given=$1 prefix=$2 note=$3
  if [ -n "$given" ]; then
    mkdir -m 700 "$given" 2>/dev/null || die "$given exists (stop it first, or name a new dir)"
    DIR=$given
  else
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/$prefix.XXXXXXXX")
    mkdir -p "$(dirname "$note")"
    echo "$DIR" >"$note"
  fi
}
