# The two commands a newcomer needs; both run scripts/setup first (seconds when warm).
#   make up     bring up the dev fleet (STACK=name for another) and write its SSH config
#   make test   run every test: unit, client, and end to end against real Docker and Pulumi
SHELL := /bin/bash
STACK ?= dev
ACTIVATE := . scripts/activate

.PHONY: setup up down test bench

setup:
	@scripts/setup

up: setup
	@$(ACTIVATE) && pulumi stack select --create $(STACK) --secrets-provider passphrase \
		&& pulumi up --yes --stack $(STACK) && agentfleet --stack $(STACK) ssh-config

down: setup
	@$(ACTIVATE) && pulumi destroy --yes --stack $(STACK)

test: setup
	@$(ACTIVATE) && python -m pytest

bench: setup
	@$(ACTIVATE) && python -m bench
