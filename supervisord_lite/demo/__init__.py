"""The bundled demo: a small HTTP app run as primary and backup."""
