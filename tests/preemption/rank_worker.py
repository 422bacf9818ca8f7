"""One rank of test_save_at_signal's two-rank test: runs pretrain; rank ``SIGNAL_RANK`` sends itself a real USR2 at its
``SIGNAL_AT``-th step boundary. Prints ``{"preempted_at": STEP, "signalled": bool}`` (whether this rank got the signal).
"""

from __future__ import annotations

import json
import os
import signal
import sys

from simclr_hpc.config import load_config
from simclr_hpc.train import preempt
from simclr_hpc.train.runner import run_stage


def main() -> None:
    overrides = json.loads(sys.argv[1])
    real, calls = preempt.stop_requested, []
    got_signal = os.environ["RANK"] == os.environ["SIGNAL_RANK"]

    def check() -> bool:
        calls.append(1)
        if got_signal and len(calls) == int(os.environ["SIGNAL_AT"]):
            os.kill(os.getpid(), signal.SIGUSR2)
        return real()

    preempt.stop_requested = check
    try:
        run_stage("pretrain", load_config(None, overrides))
    except preempt.Preempted as stop:
        print(json.dumps({"preempted_at": stop.step, "signalled": got_signal}))
        return
    print(json.dumps({"preempted_at": None, "signalled": got_signal}))


if __name__ == "__main__":
    main()
