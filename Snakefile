# bioingest: microscopy acquisitions -> lossless, validated OME-Zarr.
# Run from anywhere: snakemake -s Snakefile --cores 2 --config input_dir=DIR output_dir=OUT
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")


configfile: Path(workflow.basedir) / "config" / "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/inventory.smk"
include: "workflow/rules/checksums.smk"
include: "workflow/rules/convert.smk"
include: "workflow/rules/metadata.smk"
include: "workflow/rules/pyramid.smk"
include: "workflow/rules/ometiff.smk"
include: "workflow/rules/qc.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        # The manifest's inputs are every deliverable: asking for it asks for them all.
        layout.manifest(OUT),
        layout.run_crate(OUT),
        # Asked for, so that a missing copy is remade (the crate alone is not enough).
        layout.workflow_copy(OUT),


onsuccess:
    # Bad inputs do not stop the run; they make it exit non-zero at its end.
    report_failures()


onerror:
    end_of_run()
