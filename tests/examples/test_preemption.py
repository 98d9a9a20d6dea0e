"""The stop request of the training loops, in this process (the multi-process path faked).

``tests/examples/test_trainer_faults.py`` signals a real trainer on one process and
``tests/examples/test_multihost_training.py`` two real processes; these tests pin down
the decisions in between.
"""

import os
import signal

import pytest
from jax.experimental import multihost_utils

from examples.common import preemption


def test_one_process_stops_at_the_first_signal_and_aborts_at_the_second():
    with preemption.StopRequest(multi_process=False) as stop:
        assert not stop.poll(0)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.poll(1) and stop.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # Handlers restored.


def test_several_processes_stop_at_the_step_the_preemption_service_names(monkeypatch):
    monkeypatch.setattr(multihost_utils, "reached_preemption_sync_point", lambda s: s == 5)
    with preemption.StopRequest(multi_process=True) as stop:
        assert [stop.poll(step) for step in range(5)] == [False] * 5
        assert stop.poll(5) and stop.signum == signal.SIGTERM


def test_several_processes_leave_sigterm_to_jax_and_pass_ctrl_c_on_to_it(monkeypatch):
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    monkeypatch.setattr(multihost_utils, "reached_preemption_sync_point", lambda s: False)
    try:
        with preemption.StopRequest(multi_process=True) as stop:
            os.kill(os.getpid(), signal.SIGINT)  # Becomes a SIGTERM for the service.
            assert received == [signal.SIGTERM]
            assert not stop.poll(3)  # Only the agreed step stops the run.
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_one_process_needs_no_agreement():
    assert not preemption.agreeing()
