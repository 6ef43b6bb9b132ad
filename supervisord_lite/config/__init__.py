"""The configuration: YAML text in, a frozen :class:`settings.Config` out, and its reference.

Owns: reading the YAML with line numbers (``yaml_reader``, the only yaml import),
value types and their text forms (``values``), how one value is read and checked
(``validators``, ``templates`` for placeholders), how a setting is declared
(``schema``), the frozen dataclasses with every setting declared once
(``settings``), rules across a section (``rules``), the one generic walk from YAML to
``Config`` (``parser``: ``parse_config``, ``load_config``), what a config may hold at
all (``limits``) and the reference generated from the declarations (``reference``).
May import: ``errors``, ``paths`` and the standard library (and yaml, in one module).

General rules of the loader: unknown keys are errors that list the valid keys. A
key written as null means "none" for a setting whose type says "or null"; for a
section, its defaults, except ``health`` and ``release`` (none) and
``supervisor.http`` (the API disabled); for ``instances``, ``env``, ``listen`` and
``depends_on``, their defaults; any other setting rejects it. Relative paths are
resolved against the config file's directory, unless the file name is a pseudo
name such as ``<config>``.
"""
