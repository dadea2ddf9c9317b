# The two commands a newcomer needs; both run scripts/setup first (seconds when warm).
#   make up     bring up the dev fleet (STACK=name for another) and write its SSH config;
#               setup installs only what that stack's backends need
#   make upgrade  move a stack made by agentfleet 0.1 (STACK=name) to this version, once
#   make dist   build the one installable distribution (dist/agentfleet-<version>-py3-none-any.whl)
#   make test   run every test: unit, client, and end to end against real Docker and Pulumi;
#               setup installs every backend
SHELL := /bin/bash
STACK ?= dev
ACTIVATE := . scripts/activate

.PHONY: setup up down upgrade test bench dist

setup:
	@scripts/setup all

up:
	@scripts/setup --stack $(STACK)
	@$(ACTIVATE) && pulumi stack select --create $(STACK) --secrets-provider passphrase \
		&& pulumi up --yes --stack $(STACK) && agentfleet --stack $(STACK) ssh-config

down:
	@scripts/setup --stack $(STACK)
	@$(ACTIVATE) && pulumi destroy --yes --stack $(STACK) && agentfleet --stack $(STACK) disconnect

upgrade:
	@scripts/setup --stack $(STACK)
	@$(ACTIVATE) && scripts/upgrade-from-0.1 $(STACK)

dist:
	@rm -rf build && python3 -m pip wheel --no-deps -q -w dist . && ls dist/agentfleet-*.whl

test: setup
	@$(ACTIVATE) && python -m pytest

bench:
	@scripts/setup docker kubernetes
	@$(ACTIVATE) && python -m bench
