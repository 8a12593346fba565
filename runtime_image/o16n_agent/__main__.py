"""Entry point: ``python -I -m o16n_agent --socket /run/o16n/agent.sock --workdir /work``.

In a container the package is the controller's, mounted read-only at /opt/o16n-agent and
run from there first on ``sys.path`` (``controller/runtime/spec.py``: ``AGENT_COMMAND``)."""

from o16n_agent.agent import main

if __name__ == "__main__":
    raise SystemExit(main())
