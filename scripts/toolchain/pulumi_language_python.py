"""A Pulumi language host for Python programs, served over Pulumi's LanguageRuntime gRPC protocol.

Why it exists: the upstream host (`pulumi-language-python`, a Go module of its own) is not served
by the Go module proxy that these machines reach, while the Pulumi CLI and the Python SDK are.
This host covers what `pulumi preview/up/destroy/refresh` need of a language host: it runs the
program with Pulumi's own `pulumi-language-python-exec` launcher (installed beside this file by
scripts/setup from the SDK module) in the interpreter that runs this host, or, as the upstream host
does, in the project's virtualenv when Pulumi.yaml names one (`runtime.options.virtualenv`, e.g.
a project `agentfleet new` made, with agentfleet installed in it). Unlike the upstream
host, it hands the program the stack's configuration on stdin, never in the environment: a
process's environment is readable in /proc/<pid>/environ for its whole life, and the
configuration holds the stack's decrypted secrets.
Where the official installer works, setup uses the upstream host instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
from concurrent import futures
from pathlib import Path
from types import ModuleType

import grpc
from google.protobuf import empty_pb2


def sdk_protocol() -> tuple[ModuleType, ModuleType, ModuleType]:
    """The SDK's generated modules of the language host's protocol, without the SDK: importing
    `pulumi.runtime.proto` runs the whole SDK's __init__ first (~0.2 s), and the engine starts this
    host twice per command. A package of its own over the same directory loads only these modules
    (and what they import: the plugin and HCL messages)."""
    found = importlib.util.find_spec("pulumi")  # locates the SDK without importing it
    assert found is not None and found.origin is not None, "the Pulumi Python SDK is not installed"
    package = ModuleType("_pulumi_protocol")
    package.__path__ = [str(Path(found.origin).parent / "runtime" / "proto")]
    sys.modules[package.__name__] = package
    return tuple(importlib.import_module(f"{package.__name__}.{name}")  # type: ignore[return-value]
                 for name in ("language_pb2", "language_pb2_grpc", "plugin_pb2"))


language_pb2, language_pb2_grpc, plugin_pb2 = sdk_protocol()

EXEC_LAUNCHER = Path(__file__).resolve().with_name("pulumi-language-python-exec")
# The launcher exits with this status after it has shown the user an actionable message.
EXIT_AFTER_USER_MESSAGE = 32
VERSION = os.environ.get("AGENTFLEET_PULUMI_VERSION", "3.0.0").lstrip("v")


# Runs first in the program's interpreter, then becomes Pulumi's launcher with its own arguments.
# The launcher loads the configuration through the SDK's two environment readers: here they read
# what arrived on stdin instead.
CONFIG_FROM_STDIN = """import json, runpy, sys
import pulumi.runtime
given = json.load(sys.stdin)
pulumi.runtime.get_config_env = lambda: given["config"]
pulumi.runtime.get_config_secret_keys_env = lambda: given["secret_keys"]
pulumi.runtime.set_all_config(given["config"], given["secret_keys"])
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def interpreter(info: language_pb2.ProgramInfo) -> str:
    """The project's virtualenv's python (relative to the project root), else this host's."""
    virtualenv = info.options.fields["virtualenv"].string_value if "virtualenv" in info.options.fields else ""
    if not virtualenv:
        return sys.executable
    python = Path(info.root_directory, virtualenv, "bin", "python")
    if not python.exists():
        raise FileNotFoundError(f"the project's virtualenv has no {python}: make it (python3 -m venv {virtualenv}) "
                                f"and install the project's requirements into it")
    return str(python)


def launcher_argv(request: language_pb2.RunRequest, engine_address: str) -> list[str]:
    """The launcher's command line: the same flags the upstream host passes, empty ones left out."""
    flags = {
        "monitor": request.monitor_address,
        "engine": engine_address,
        "project": request.project,
        "root_directory": request.info.root_directory,
        "stack": request.stack,
        "pwd": request.pwd,
        "dry_run": str(request.dryRun).lower(),
        "parallel": str(request.parallel),
        "organization": request.organization,
    }
    argv = [interpreter(request.info), "-u", "-c", CONFIG_FROM_STDIN, str(EXEC_LAUNCHER)]
    for name, value in flags.items():
        if value:
            argv += [f"--{name}", value]
    return [*argv, request.info.entry_point or ".", *request.args]


def launcher_input(request: language_pb2.RunRequest) -> bytes:
    """The configuration, for the program's stdin (never its arguments or environment)."""
    return json.dumps({"config": dict(request.config), "secret_keys": list(request.configSecretKeys)}).encode()


class PythonLanguageHost(language_pb2_grpc.LanguageRuntimeServicer):
    """Runs one Python program per Run call; everything else answers 'nothing to do'."""

    def __init__(self, engine_address: str) -> None:
        self.engine_address = engine_address
        self.running: subprocess.Popen[bytes] | None = None

    def Handshake(self, request, context):
        if request.engine_address:
            self.engine_address = request.engine_address
        return language_pb2.LanguageHandshakeResponse()

    def GetPluginInfo(self, request, context):
        return plugin_pb2.PluginInfo(version=VERSION)

    def GetRequiredPlugins(self, request, context):
        return language_pb2.GetRequiredPluginsResponse()

    def GetRequiredPackages(self, request, context):
        return language_pb2.GetRequiredPackagesResponse()

    def InstallDependencies(self, request, context):
        # scripts/setup owns the virtual environment; there is nothing to install per run.
        return iter(())

    def Run(self, request, context):
        cwd = request.pwd or request.info.program_directory or None
        try:
            argv = launcher_argv(request, self.engine_address)
        except FileNotFoundError as missing:
            return language_pb2.RunResponse(error=str(missing))
        self.running = subprocess.Popen(argv, stdin=subprocess.PIPE, cwd=cwd)
        assert self.running.stdin is not None
        self.running.stdin.write(launcher_input(request))
        self.running.stdin.close()
        status = self.running.wait()
        self.running = None
        if status == 0:
            return language_pb2.RunResponse()
        if status == EXIT_AFTER_USER_MESSAGE:
            return language_pb2.RunResponse(bail=True)
        return language_pb2.RunResponse(error=f"program exited with non-zero exit code: {status}")

    def Cancel(self, request, context):
        if self.running is not None:
            self.running.send_signal(signal.SIGINT)
        return empty_pb2.Empty()


def main(argv: list[str]) -> None:
    positional = [arg for arg in argv if not arg.startswith("-")]
    engine_address = positional[0] if positional else ""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(PythonLanguageHost(engine_address), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    # The engine stops its plugins with SIGINT: that is a normal shutdown, not an error.
    signal.signal(signal.SIGINT, lambda *_: server.stop(grace=None))
    server.wait_for_termination()


if __name__ == "__main__":
    main(sys.argv[1:])
