"""Plugin discovery through real entry points: broken plugins are listed as failed and the
rest load; allow- and deny-lists; strict mode."""

from __future__ import annotations

import pluggy
import pytest

import bitmusa_hookspecs
import bitmusa_plugin
from bitmusa_hookspecs import hookimpl
from bitmusa_plugin._engine.plugins import PluginLoadError, PluginRegistry
from conftest import FakeDistribution

GOOD = """
from bitmusa_hookspecs import hookimpl

@hookimpl
def on_order(order, event):
    pass

@hookimpl
async def on_wallet(balance):
    pass
"""
BROKEN_IMPORT = "import this_module_does_not_exist\n"
EXITS = "import sys\nsys.exit(3)\n"
MISSPELLED = """
from bitmusa_hookspecs import hookimpl

@hookimpl
def on_ordr(order):
    pass
"""
BAD_ARGUMENT = """
from bitmusa_hookspecs import hookimpl

@hookimpl
def on_order(order, extra):
    pass
"""
CLASS_PLUGIN = """
from bitmusa_hookspecs import hookimpl

class Plugin:
    @hookimpl
    def on_position(self, position):
        pass
"""


def test_markers_are_shared_and_named_bitmusa() -> None:
    assert bitmusa_plugin.hookimpl is bitmusa_hookspecs.hookimpl
    assert bitmusa_hookspecs.PROJECT_NAME == "bitmusa"
    assert isinstance(bitmusa_hookspecs.hookimpl, pluggy.HookimplMarker)
    assert bitmusa_hookspecs.hookimpl.project_name == "bitmusa"
    assert bitmusa_hookspecs.hookspec.project_name == "bitmusa"


def test_broken_plugins_are_listed_failed_and_the_rest_load(fake_dist: FakeDistribution) -> None:
    fake_dist.install(
        {
            "good_plugin": GOOD,
            "broken_plugin": BROKEN_IMPORT,
            "exiting_plugin": EXITS,
            "misspelled_plugin": MISSPELLED,
            "bad_argument_plugin": BAD_ARGUMENT,
            "class_plugin": CLASS_PLUGIN,
        },
        {
            "good": "good_plugin",
            "broken": "broken_plugin",
            "exiting": "exiting_plugin",
            "misspelled": "misspelled_plugin",
            "bad-argument": "bad_argument_plugin",
            "classy": "class_plugin:Plugin",
        },
        name="several-plugins",
        version="2.5",
    )
    host = PluginRegistry()
    host.load_entrypoints()
    records = {r.name: r for r in host.records}
    assert records["good"].status == "loaded"
    assert records["good"].hooks == ["on_wallet", "on_order"]
    assert (records["good"].distribution, records["good"].version) == ("several-plugins", "2.5")
    assert records["classy"].status == "loaded"
    assert records["classy"].hooks == ["on_position"]
    for name, fragment in (
        ("broken", "ModuleNotFoundError"),
        ("exiting", "SystemExit"),
        ("misspelled", "unknown hook 'on_ordr'"),
        ("bad-argument", "extra"),
    ):
        assert records[name].status == "failed", name
        assert fragment in (records[name].error or ""), records[name].error
    loaded = {plugin for plugin, _, _ in host.hookimpls()} - {"fill-notifier"}  # the example
    assert loaded == {"good", "classy"}


def test_strict_makes_the_first_failure_fatal(fake_dist: FakeDistribution) -> None:
    fake_dist.install({"misspelled_plugin": MISSPELLED})
    with pytest.raises(PluginLoadError, match="on_ordr"):
        PluginRegistry(strict=True).load_entrypoints()


@pytest.mark.parametrize(
    ("env", "loaded"),
    [
        ({}, {"alpha", "beta"}),
        ({"BITMUSA_LOAD_PLUGINS": "beta"}, {"beta"}),
        ({"BITMUSA_LOAD_PLUGINS": ""}, set()),
        ({"BITMUSA_LOAD_PLUGINS": " alpha , beta "}, {"alpha", "beta"}),
        ({"BITMUSA_DISABLE_PLUGINS": "alpha"}, {"beta"}),
        ({"BITMUSA_LOAD_PLUGINS": "alpha,beta", "BITMUSA_DISABLE_PLUGINS": "beta"}, {"alpha"}),
    ],
)
def test_allow_and_deny_lists(
    fake_dist: FakeDistribution, env: dict[str, str], loaded: set[str]
) -> None:
    fake_dist.install({"alpha": GOOD, "beta": GOOD})
    host = PluginRegistry()
    host.load_entrypoints(env)
    mine = {r.name: r.status for r in host.records if r.name in ("alpha", "beta")}
    assert {name for name, status in mine.items() if status == "loaded"} == loaded
    assert {name for name, status in mine.items() if status == "disabled"} == (
        {"alpha", "beta"} - loaded
    )


def test_builtin_outputs_register_through_the_same_path() -> None:
    from bitmusa_plugin._outputs import make_output

    host = PluginRegistry()
    record = host.register(make_output("jsonl"), "output-jsonl", builtin=True)
    assert record.status == "loaded"
    assert record.hooks == list(bitmusa_hookspecs.HOOK_NAMES)


def test_a_plugin_declares_its_delivery_policy_once_and_typed() -> None:
    class Recorder:
        bitmusa_delivery = "all"

        @hookimpl
        def on_order(self) -> None: ...

    class Misspelt:
        bitmusa_delivery = "everything"

        @hookimpl
        def on_order(self) -> None: ...

    class Default:
        @hookimpl
        def on_order(self) -> None: ...

    host = PluginRegistry()
    assert host.register(Recorder(), "recorder").delivery == "all"
    assert host.register(Default(), "default").delivery == "latest"
    bad = host.register(Misspelt(), "misspelt")
    assert bad.status == "failed"
    assert "bitmusa_delivery = 'everything'" in (bad.error or "")
    assert "'latest' or 'all'" in (bad.error or "")
    assert host.policies() == {"recorder": "all", "default": "latest"}
    # the built-in outputs: the recorder lossless, the human ones latest
    from bitmusa_plugin._outputs import make_output

    for name, policy in (("jsonl", "all"), ("pretty", "latest"), ("dashboard", "latest")):
        assert host.register(make_output(name), f"output-{name}").delivery == policy
