"""``python -m crossinfer.expansion``: same as ``crossinfer-expansion-service``."""

from crossinfer.expansion.service import main

if __name__ == "__main__":
    raise SystemExit(main())
