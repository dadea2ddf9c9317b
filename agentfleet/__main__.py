"""`python -m agentfleet`, the same as the `agentfleet` command."""

from agentfleet.cli import main

raise SystemExit(main())
