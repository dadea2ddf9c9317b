"""The stand-in Python language host hands the program what the upstream host would."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from pulumi.runtime.proto import language_pb2

HOST_FILE = Path(__file__).resolve().parents[2] / "scripts" / "toolchain" / "pulumi_language_python.py"
spec = importlib.util.spec_from_file_location("pulumi_language_python", HOST_FILE)
host = importlib.util.module_from_spec(spec)
spec.loader.exec_module(host)


def request(**fields) -> language_pb2.RunRequest:
    message = language_pb2.RunRequest(
        project="agentfleet", stack="dev", pwd="/work/project", monitor_address="127.0.0.1:4000",
        dryRun=True, parallel=8, organization="organization", args=["extra"], **fields,
    )
    message.info.root_directory = "/work/project"
    message.info.entry_point = "."
    message.config["reference-fleet:fleet"] = '{"agents": []}'
    message.configSecretKeys.append("reference-fleet:key1")
    return message


def test_launcher_gets_the_upstream_flags_then_the_program_and_its_args():
    argv = host.launcher_argv(request(), "127.0.0.1:5000")
    assert argv[2:4] == ["-c", host.CONFIG_FROM_STDIN] and argv[4].endswith("pulumi-language-python-exec")
    flags = dict(zip(argv[5:-2:2], argv[6:-2:2]))
    assert flags == {
        "--monitor": "127.0.0.1:4000", "--engine": "127.0.0.1:5000", "--project": "agentfleet",
        "--root_directory": "/work/project", "--stack": "dev", "--pwd": "/work/project",
        "--dry_run": "true", "--parallel": "8", "--organization": "organization",
    }
    assert argv[-2:] == [".", "extra"]


def test_config_travels_on_stdin_never_in_argv_or_the_environment():
    message = request()
    given = json.loads(host.launcher_input(message))
    assert given == {"config": {"reference-fleet:fleet": '{"agents": []}'}, "secret_keys": ["reference-fleet:key1"]}
    assert not any("agents" in arg for arg in host.launcher_argv(message, "e"))


def test_the_program_reads_its_config_from_stdin_into_the_sdk(tmp_path):
    """The shim as the program's interpreter runs it, with a stand-in launcher that prints what
    the SDK's config holds."""
    import subprocess
    import sys

    launcher = tmp_path / "launcher.py"
    launcher.write_text("import json, os, sys\nfrom pulumi.runtime import config\n"
                        "print(json.dumps([sys.argv, config.get_config('reference-fleet:key1'), "
                        "config.is_config_secret('reference-fleet:key1'), 'PULUMI_CONFIG' in os.environ]))\n")
    message = request()
    message.config["reference-fleet:key1"] = "s3cret"
    done = subprocess.run([sys.executable, "-c", host.CONFIG_FROM_STDIN, str(launcher), "--stack", "dev"],
                          input=host.launcher_input(message), capture_output=True, check=True)
    assert json.loads(done.stdout) == [[str(launcher), "--stack", "dev"], "s3cret", True, False]


def test_a_project_with_a_virtualenv_runs_in_its_python_else_in_the_hosts(tmp_path):
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").touch()
    message = request()
    message.info.root_directory = str(tmp_path)
    assert host.launcher_argv(message, "e")[0] == host.sys.executable
    message.info.options.update({"virtualenv": "venv"})
    assert host.launcher_argv(message, "e")[0] == str(tmp_path / "venv" / "bin" / "python")
    message.info.options.update({"virtualenv": "missing"})
    try:
        host.launcher_argv(message, "e")
    except FileNotFoundError as error:
        assert "python3 -m venv missing" in str(error)
    else:
        raise AssertionError("a missing virtualenv must be refused")
