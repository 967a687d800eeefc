"""Plugin discovery, validation and listing (pluggy); delivery lives in ``dispatch``.

Every plugin, built-in output or third-party entry point, goes through
:meth:`PluginRegistry.register`, so they are validated and listed the same way. One plugin
that fails to import or validate is recorded as ``failed`` and the rest still load
(conda's rule; llm#1280 shows the opposite). ``strict`` turns the first failure into
:class:`PluginLoadError`.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal

import pluggy
from pluggy import HookImpl

from bitmusa_hookspecs import (
    DELIVERY_ATTRIBUTE,
    DELIVERY_POLICIES,
    HOOK_NAMES,
    PROJECT_NAME,
    DeliveryPolicy,
    specs,
)

log = logging.getLogger(__name__)

#: The entry-point group third-party plugins publish under.
ENTRY_POINT_GROUP = PROJECT_NAME
#: Comma-separated allow-list of entry-point plugin names; set but empty loads none.
LOAD_ENV = "BITMUSA_LOAD_PLUGINS"
#: Comma-separated deny-list of entry-point plugin names.
DISABLE_ENV = "BITMUSA_DISABLE_PLUGINS"

Status = Literal["loaded", "failed", "disabled"]


class PluginLoadError(Exception):
    """A plugin failed to load while ``strict`` was on."""


@dataclass
class PluginRecord:
    """One plugin as ``bitmusa-plugin plugins`` lists it."""

    name: str
    status: Status
    version: str | None = None
    distribution: str | None = None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    builtin: bool = False
    delivery: DeliveryPolicy = "latest"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "distribution": self.distribution,
            "hooks": self.hooks,
            "delivery": self.delivery,
            "status": self.status,
            "error": self.error,
            "builtin": self.builtin,
        }


def _names(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


class PluginRegistry:
    """The pluggy ``PluginManager`` with our hookspecs, plus a record of every plugin."""

    def __init__(self, *, strict: bool = False) -> None:
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(specs)
        self.strict = strict
        self.records: list[PluginRecord] = []

    # -- loading ----------------------------------------------------------------------------

    def register(
        self,
        plugin: object,
        name: str,
        *,
        distribution: str | None = None,
        version: str | None = None,
        builtin: bool = False,
    ) -> PluginRecord:
        """Register and validate one plugin; a failure is recorded, not raised (unless
        strict)."""
        record = PluginRecord(
            name, "loaded", version=version, distribution=distribution, builtin=builtin
        )
        try:
            if inspect.isclass(plugin):  # an entry point may name a class: instantiate it
                plugin = plugin()
            self.pm.register(plugin, name)
            try:
                record.hooks = self._validate(plugin, name)
                record.delivery = delivery_policy(plugin)
            except Exception:
                self.pm.unregister(plugin)
                raise
        except Exception as exc:
            self._fail(record, f"{type(exc).__name__}: {exc}")
        self.records.append(record)
        return record

    def load_entrypoints(self, env: Mapping[str, str] | None = None) -> None:
        """Load the ``bitmusa`` entry points, honouring the allow- and deny-lists."""
        env = os.environ if env is None else env
        allow = _names(env.get(LOAD_ENV))
        deny = _names(env.get(DISABLE_ENV)) or set()
        seen: set[str] = set()
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in seen:  # the same distribution on sys.path twice
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            version = dist.version if dist is not None else None
            if (allow is not None and ep.name not in allow) or ep.name in deny:
                self.records.append(
                    PluginRecord(ep.name, "disabled", version=version, distribution=dist_name)
                )
                continue
            try:
                plugin = ep.load()
            except BaseException as exc:  # a plugin's import may even call sys.exit()
                if isinstance(exc, KeyboardInterrupt):
                    raise
                record = PluginRecord(ep.name, "loaded", version=version, distribution=dist_name)
                self._fail(record, f"import failed: {type(exc).__name__}: {exc}")
                self.records.append(record)
                continue
            self.register(plugin, ep.name, distribution=dist_name, version=version)

    # -- inspection -------------------------------------------------------------------------

    def hookimpls(self) -> list[tuple[str, str, HookImpl]]:
        """Every registered implementation as (plugin name, hook name, HookImpl), in
        registration order (pluggy would call the last registered first)."""
        result: list[tuple[str, str, HookImpl]] = []
        for hook in HOOK_NAMES:
            for impl in getattr(self.pm.hook, hook).get_hookimpls():
                result.append((impl.plugin_name, hook, impl))
        return result

    def policies(self) -> dict[str, DeliveryPolicy]:
        """Each loaded plugin's delivery policy, by name."""
        return {r.name: r.delivery for r in self.records if r.status == "loaded"}

    @property
    def failed(self) -> list[PluginRecord]:
        return [r for r in self.records if r.status == "failed"]

    # -- internals --------------------------------------------------------------------------

    def _validate(self, plugin: object, name: str) -> list[str]:
        hooks: list[str] = []
        for caller in self.pm.get_hookcallers(plugin) or []:
            impls = [i for i in caller.get_hookimpls() if i.plugin is plugin]
            if caller.spec is None:
                if all(i.optionalhook for i in impls):
                    continue
                known = ", ".join(HOOK_NAMES)
                raise pluggy.PluginValidationError(
                    plugin, f"unknown hook {caller.name!r} (known hooks: {known})"
                )
            for impl in impls:
                if impl.hookwrapper or impl.wrapper:
                    raise pluggy.PluginValidationError(
                        plugin, f"{caller.name}: hook wrappers are not supported"
                    )
            hooks.append(caller.name)
        return sorted(hooks, key=HOOK_NAMES.index)

    def _fail(self, record: PluginRecord, error: str) -> None:
        record.status = "failed"
        record.error = error
        if self.strict:  # the caller says it, once
            raise PluginLoadError(f"plugin {record.name!r} failed to load: {error}")
        log.error("plugin %s failed to load: %s", record.name, error)


def delivery_policy(plugin: object) -> DeliveryPolicy:
    """The policy ``plugin`` declares with ``bitmusa_delivery`` (module-level, or on its
    class or instance); ``latest`` when it declares none. Anything else is an error."""
    value = getattr(plugin, DELIVERY_ATTRIBUTE, "latest")
    for policy in DELIVERY_POLICIES:
        if value == policy:
            return policy
    choices = " or ".join(repr(p) for p in DELIVERY_POLICIES)
    raise pluggy.PluginValidationError(
        plugin, f"{DELIVERY_ATTRIBUTE} = {value!r}: the delivery policy must be {choices}"
    )
