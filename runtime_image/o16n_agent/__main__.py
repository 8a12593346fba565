"""Entry point: ``python -I -m o16n_agent --socket /run/o16n/agent.sock --workdir /work``."""

from o16n_agent.agent import main

if __name__ == "__main__":
    raise SystemExit(main())
