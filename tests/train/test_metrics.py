"""The progress line of a batch log: elapsed time and an ETA at this attempt's pace."""

import time

from simclr_hpc.train.metrics import MetricsWriter, format_duration


def test_durations_read_as_hours_minutes_seconds():
    assert [format_duration(s) for s in (0, 42.4, 65, 3599, 3720, -3)] == [
        "0s",
        "42s",
        "1m05s",
        "59m59s",
        "1h02m",
        "0s",
    ]


def test_eta_is_the_remaining_steps_at_the_pace_since_this_attempt_started():
    writer = MetricsWriter(None, total_steps=100, start_step=40, enabled=True, label="pretrain x")
    writer._t0 = time.monotonic() - 30  # 30 s for steps 41..50 of a resumed run: 3 s per step, 50 steps to go
    assert writer.timing(50) == "elapsed 30s eta 2m30s"
    assert writer.timing(40).endswith("eta ?")
