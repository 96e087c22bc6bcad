"""A program written against the C++ wheel runs unchanged against ours with the same
results: `compat_expected.json` is what the C++ wheel 0.3.13.post1 printed for
`compat_program.py` (recorded on this machine with its master and `mooncake_client`)."""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def test_the_cpp_wheels_program_gets_the_same_results(cluster):
    r = subprocess.run(
        [sys.executable, os.path.join(HERE, "compat_program.py"), cluster.master_addr,
         cluster.metadata], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    ours = json.loads(r.stdout)
    with open(os.path.join(HERE, "compat_expected.json")) as f:
        expected = json.load(f)
    differences = [(e, o) for e, o in zip(expected, ours) if e != o]
    assert not differences and len(ours) == len(expected), differences
