"""Sub-commands imported only when used: a Typer group whose commands are named up front but loaded on
first use.

Each ``khoa`` process runs one command, yet importing every command module (and through them
SQLAlchemy, Alembic, botocore, the service models) cost more than half a second per start, paid by
every test and script that runs ``khoa``. The group knows each command's name and where it lives
(``module:attribute``); ``khoa <command>`` imports that module alone. Help that lists the commands
(``khoa --help``) loads them all, which is the price of showing their help texts.

A loaded command is built exactly as ``app.add_typer(sub_app, name=…)`` or ``app.command(name, …)(func)``
would have built it, so names, help, options, error messages and exit codes do not change.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import typer
from typer.core import TyperGroup
from typer.models import CommandInfo, TyperInfo

from khoa.cli.common import CliError

Command = Any  # a click command as Typer builds it (typer vendors click; its classes are not public)


@dataclass(frozen=True)
class LazyCommand:
    """Where a command lives: ``target`` is ``module:attribute``, a ``typer.Typer`` (a group, as with
    ``app.add_typer``) or a function (a command, as with ``app.command(name, **settings)``).
    ``optional``: the module may be absent from this tree; the command is then not offered."""

    target: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    optional: bool = False

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    def available(self) -> bool:
        """False only for an optional command whose module is not there (no import happens)."""
        return not self.optional or importlib.util.find_spec(self.module) is not None

    def load(self, name: str, *, pretty_exceptions_short: bool, group: TyperGroup) -> Command:
        """Import the target and build its click command under ``name``, with the parent's settings."""
        module_name, _, attribute = self.target.partition(":")
        try:
            target = getattr(importlib.import_module(module_name), attribute)
        except ModuleNotFoundError as exc:
            if exc.name is None or exc.name.split(".")[0] == "khoa":
                raise  # a missing Khoa module is a broken install, not a missing extra
            # What khoa.console says when the server extra is absent, now that the import happens here.
            raise CliError(
                f"the server's dependencies are not installed (no module named {exc.name!r}); "
                "install them with: pip install 'khoa[server]'"
            ) from None
        if isinstance(target, typer.Typer):
            return typer.main.get_group_from_info(
                TyperInfo(target, name=name),
                pretty_exceptions_short=pretty_exceptions_short,
                rich_markup_mode=group.rich_markup_mode,
                suggest_commands=group.suggest_commands,
            )
        return typer.main.get_command_from_info(
            CommandInfo(name=name, callback=target, **self.settings),
            pretty_exceptions_short=pretty_exceptions_short,
            rich_markup_mode=group.rich_markup_mode,
        )


class LazyCommands(MutableMapping[str, Command]):
    """A group's commands: those built already, then the lazy ones (in ``lazy``'s order), each built on
    first access. Its keys are every name, so listings and "did you mean" suggestions see them all."""

    def __init__(
        self, built: Mapping[str, Command], lazy: Mapping[str, LazyCommand], build: Callable[[str], Command]
    ) -> None:
        self._built: dict[str, Command] = dict(built)
        self._names = [*self._built, *(name for name in lazy if name not in self._built)]
        self._build = build

    def loaded(self) -> Mapping[str, Command]:
        """The commands built so far (none of the others is imported)."""
        return dict(self._built)

    def __getitem__(self, name: str) -> Command:
        if name not in self._built:
            if name not in self._names:
                raise KeyError(name)
            self._built[name] = self._build(name)
        return self._built[name]

    def __setitem__(self, name: str, command: Command) -> None:
        if name not in self._names:
            self._names.append(name)
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        self._names.remove(name)
        self._built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names))

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names


class LazyGroup(TyperGroup):
    """A Typer group with lazily loaded commands. Subclass it with ``registry`` set and pass it as
    ``typer.Typer(cls=…)``; ``loaded`` may adjust each command once it is built."""

    registry: ClassVar[Mapping[str, LazyCommand]] = {}
    # As typer.Typer's own default; the app's value is not handed to its group class.
    pretty_exceptions_short: ClassVar[bool] = True

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        lazy = {name: entry for name, entry in self.registry.items() if entry.available()}
        self.commands = LazyCommands(self.commands, lazy, lambda name: self._load(name, lazy[name]))

    def _load(self, name: str, entry: LazyCommand) -> Command:
        command = entry.load(name, pretty_exceptions_short=self.pretty_exceptions_short, group=self)
        self.loaded(command)
        return command

    def loaded(self, command: Command) -> None:
        """Called once for each command as it is built (nothing by default)."""

    def list_commands(self, ctx: Any) -> list[str]:
        """Every name, in order, without loading any command."""
        return list(self.commands)

    def get_command(self, ctx: Any, cmd_name: str) -> Command | None:
        return self.commands.get(cmd_name)


def loaded_commands(command: Command) -> Mapping[str, Command]:
    """A command's sub-commands that exist already: all of a plain group's, the built ones of a lazy
    group's (so that walking the tree does not import every command)."""
    commands = getattr(command, "commands", None)
    if isinstance(commands, LazyCommands):
        return commands.loaded()
    return commands or {}
