"""The garbage-collector policy: objects alive at settle() are frozen once per process, and
garbage made afterwards is still collected."""

import gc
import subprocess
import sys

SNIPPET = """
import gc
import weakref
from irrepro import gc_policy
gc.disable()
gc_policy.settle()
frozen = gc.get_freeze_count()
assert frozen > 0 and gc.isenabled()
class Cycle:
    pass
a, b = Cycle(), Cycle()
a.other, b.other = b, a
alive = weakref.ref(a)
del a, b
gc_policy.settle_once()  # a second call freezes nothing more
assert gc.get_freeze_count() == frozen, (gc.get_freeze_count(), frozen)
gc.collect()
assert alive() is None  # a cycle made after settle() is garbage, and collected
print("ok")
"""


def test_settle_freezes_once_and_later_garbage_is_collected():
    out = subprocess.run([sys.executable, "-c", SNIPPET], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "ok"
    assert gc.isenabled()
