"""Start-up shared by ``manage.py simulator`` and ``python -m simulator``: build, seed, serve."""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from typing import TextIO

from simulator.app import SimConfig, SimulatorApp, create_app
from simulator.seed import seed
from simulator.server import make_threaded_server
from simulator.tokens import create_token


@dataclass
class Options:
    """The command-line flags, in one place for both entry points."""

    host: str = "127.0.0.1"
    port: int = 8090
    state: str | None = None
    token: str | None = None
    seed_users: int = 0
    debug: bool = False
    control: bool = False
    latency_ms: float = 0
    jitter_ms: float = 0
    max_input_vars: int = 5000
    error_rate: float = 0.0
    profile: str = "flat"
    langs: str = "en"


def build(options: Options) -> SimulatorApp:
    """The app the flags describe. Seeding happens only for a fresh state, never on top of a loaded one."""
    fresh = not (options.state and os.path.exists(options.state))
    config = SimConfig(
        debug=options.debug,
        latency_ms=options.latency_ms,
        jitter_ms=options.jitter_ms,
        max_input_vars=options.max_input_vars,
        error_rate=options.error_rate,
        profile=options.profile,
        langs=tuple(lang.strip() for lang in options.langs.split(",") if lang.strip()),
    )
    app = create_app(config, state_file=options.state, control=options.control)
    if options.seed_users and fresh:
        seed(app.state, options.seed_users)
    if options.token:
        create_token(app.state, options.token)
    app.save_state()
    return app


def run(options: Options, out: TextIO = sys.stdout) -> None:
    """Serve in the foreground until interrupted (Ctrl-C or SIGTERM); state is saved on the way out.

    Interrupted at any point (seeding included), it stops without a traceback. `make demo` passes on a
    Ctrl-C as SIGTERM, and a terminal may send both: the second signal, arriving while the state is being
    saved, is ignored instead of breaking the save."""
    stopping = False

    def _stop(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        app = build(options)
        httpd = make_threaded_server(app, options.host, options.port)
    except KeyboardInterrupt:
        out.write("Simulator stopped before it started.\n")
        out.flush()
        return
    host, port = httpd.server_address[:2]
    users = sum(1 for u in app.state.users.values() if not u["deleted"])
    out.write(
        f"Simulated Moodle {app.config.release} listening on http://{host}:{port}/webservice/rest/server.php "
        f"({users} user{'' if users == 1 else 's'}; "
        f"control API {'on at /_sim/' if options.control else 'off'}"
        f"{'; token for wsuser ready' if options.token else ''})\n"
    )
    out.flush()
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        stopping = True
        httpd.server_close()
        app.save_state()
        out.write("Simulator stopped.\n")
        out.flush()
