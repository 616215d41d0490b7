"""How ``--help`` reads: the metavar each option declares, click's usage line, defaults in
the help text.

Typer (0.29) puts a type column beside every parameter (``<bool>`` beside ``--help``,
``<list[Path]>`` beside the documents, a range such as ``[1<=x<=256]`` beside a number)
and writes a required argument as ``{DOC}...``; it also adds ``[default: …]`` to some
options while others say their default in words, and cuts long defaults. The app's group
class (``PlainHelpGroup``) gives every parameter of every command the small subclass below
when the command tree is built: a flag shows no value, an option its own metavar (``N``,
``SPEC``), an argument its name as click writes it (``DOC...``, ``[SUITE]``), and each
default is said once, in the option's help (``tests/test_cli_help.py`` holds every command
to that at 80 columns). Nothing else of typer's rendering (panels, colours, markup) changes.
"""

from __future__ import annotations

import inspect
from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption


class PlainOption(TyperOption):
    """An option shown with its declared metavar, or none when it is a flag."""

    def display_type_rich(self, ctx: Any) -> str | None:
        if self.is_flag or self.count:
            return None
        if self.metavar is not None:
            return self.metavar or None
        return (super().display_type_rich(ctx) or "").strip("<>").upper() or None

    def _get_number_range_help_str(self) -> str | None:
        return None  # the help text says the range in words where it matters


class PlainArgument(TyperArgument):
    """An argument shown by its name only: ``DOC...`` (required), ``[SUITE]`` (optional)."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _rich_display_name(self) -> str:
        return self.display_name_raw + ("..." if self.nargs != 1 else "")

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name + ("..." if self.nargs != 1 else "")

    def _get_number_range_help_str(self) -> str | None:
        return None


def _plain_help_option(option: Any) -> Any:
    if option is not None:
        option.__class__ = PlainOption if isinstance(option, TyperOption) else option.__class__
        option.help = "show this help and exit"
    return option


class PlainCommand(TyperCommand):
    """A command whose ``--help`` is shown as a plain flag too."""

    def get_help_option(self, ctx: Any) -> Any:
        return _plain_help_option(super().get_help_option(ctx))


def plain(command: Any) -> None:
    """Give ``command``'s parameters (a group's: each of its commands', recursively) the
    plain help above; defaults are left to the help text."""
    if type(command) is TyperCommand:
        command.__class__ = PlainCommand
    if command.help:
        # typer's rich mode keeps a docstring's line breaks: the terminal wraps each paragraph
        paragraphs = [" ".join(p.split()) for p in inspect.cleandoc(command.help).split("\n\n")]
        command.help = "\n\n".join(paragraphs)
        command.short_help = command.short_help or paragraphs[0]
    for param in command.params:
        if type(param) is TyperOption:
            param.__class__ = PlainOption
        elif type(param) is TyperArgument:
            param.__class__ = PlainArgument
        param.show_default = False
    for sub in getattr(command, "commands", {}).values():
        plain(sub)


class PlainHelpGroup(TyperGroup):
    """The app's group: every command in it gets the plain help (``plain``)."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        plain(self)

    def get_help_option(self, ctx: Any) -> Any:
        return _plain_help_option(super().get_help_option(ctx))


__all__ = ["PlainArgument", "PlainCommand", "PlainHelpGroup", "PlainOption", "plain"]
