from bioingest import targets

# The target's store settings with the explicit overrides; a contradiction (shards with
# NGFF 0.4, ome_zarr false without an OME-TIFF) stops the run here, before any job.
try:
    STORE = targets.from_config(config)
except ValueError as exc:
    raise WorkflowError(f"config: {exc}") from None
# --target and the explicit store settings, for the verb (which resolves them).
PYRAMID_STORE_OPTIONS = " ".join(
    shlex.quote(o) for o in targets.pyramid_options(config)
)


rule pyramid:
    input:
        zarr=intermediate_store,
        ome_xml=layout.ome_xml(OUT, "{dataset}"),
        source_json=layout.source_json(OUT, "{dataset}"),
        study=study_file,
    output:
        # NAME/NAME.ome.zarr; intermediate/stores/NAME.ome.zarr with ome_zarr: false
        store_output(),
    log:
        layout.dataset_log(OUT, "{dataset}", "pyramid"),
    conda:
        "../../envs/bioingest.yaml"
    resources:
        mem_mb=image_mem_mb,
        runtime=image_runtime,
    params:
        store=PYRAMID_STORE_OPTIONS,
        method=pyramid_method,
        min_size=config["pyramid_min_size"],
        study=study_option,
    message:
        "pyramid {wildcards.dataset}: write the OME-Zarr with multiscale levels"
    shell:
        "bioingest pyramid {input.zarr:q} --ome-xml {input.ome_xml:q} --out {output:q} "
        "--source-json {input.source_json:q} "
        "--name {wildcards.dataset:q} {params.store} --method {params.method:q} "
        "--min-size {params.min_size} {params.study} --log {log:q}"
