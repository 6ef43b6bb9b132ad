"""The ``supctl`` client: its command line, what it prints, ``--watch``, completion.

Owns: ``main`` (one run), ``args`` (argparse and a quick parser, both from the
command registry), ``output`` (what it prints), ``watch`` (``status --watch``),
``completion`` (bash and zsh) and ``escape`` (app-controlled text made inert on a
terminal). May import only the standard library, ``control.protocol``,
``control.commands``, ``instance.states``, ``paths`` and ``errors``: a plain command
loads none of aiohttp, structlog, psutil or yaml.
"""
