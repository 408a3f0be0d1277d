"""`make demo` keeps its processes up as compose does: one that exits is started again, one that keeps exiting
stops the demo instead of looping forever."""

import signal
import socket
import sys

from integration_hub import demo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_process_that_exits_is_started_again_and_one_that_keeps_exiting_stops_the_demo(tmp_path, capsys):
    marker = tmp_path / "started"
    # Appends a line each time it starts, then exits at once: a worker that dies again and again.
    flaky = [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x\\n')"]
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        code = demo._supervise({"worker": flaky}, _free_port(), {})
    finally:
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])
    assert code == 1
    assert marker.read_text().count("x") == demo.MAX_RESTARTS + 1  # the first start, then each restart
    err = capsys.readouterr().err
    assert err.count("worker exited with 0; starting it again") == demo.MAX_RESTARTS
    assert "worker keeps exiting" in err
