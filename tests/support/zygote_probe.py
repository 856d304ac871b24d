"""What a command forked by tests/support/zygote.py sees (tests/test_zygote.py): prints its
argv, working directory, one environment variable and a draw of NumPy's global RNG as JSON,
then sleeps ARGV[1] seconds and exits with status ARGV[2]."""
import json
import os
import sys
import time

import numpy as np

print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "pid": os.getpid(),
                  "probe": os.environ.get("ZYGOTE_PROBE"), "draw": float(np.random.rand()),
                  "main": sys.modules["__main__"].__spec__.name}), flush=True)
print("to stderr", file=sys.stderr, flush=True)
time.sleep(float(sys.argv[1]))
sys.exit(int(sys.argv[2]))
