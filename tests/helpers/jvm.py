"""The Clojure/Ring/Jetty app of the JVM tests and benchmarks: where java and Debian's
jars are, and the app's one file (tests/jvm/app.clj)."""

from __future__ import annotations

import shutil
from pathlib import Path

JAVA = shutil.which("java")
JARS = Path("/usr/share/java")
# Debian's jars that ring.adapter.jetty needs (libring-jetty-adapter-clojure's depends)
CLASSPATH = ":".join(
    str(JARS / f"{name}.jar")
    for name in (
        "clojure", "core.specs.alpha", "spec.alpha", "ring-core", "ring-servlet",
        "ring-jetty-adapter", "ring-codec", "commons-codec", "commons-io",
        "commons-fileupload", "crypto-random", "crypto-equality", "jetty9-server",
        "jetty9-http", "jetty9-io", "jetty9-util", "servlet-api",
    )
)  # fmt: skip
APP_CLJ = Path(__file__).resolve().parent.parent / "jvm" / "app.clj"
