rule pyramid:
    input:
        zarr=intermediate_store,
        ome_xml=layout.ome_xml(OUT, "{dataset}"),
        source_json=layout.source_json(OUT, "{dataset}"),
        study=STUDY_FILE,
    output:
        # NAME/NAME.ome.zarr; intermediate/stores/NAME.ome.zarr with ome_zarr: false
        store_output(),
    log:
        layout.dataset_log(OUT, "{dataset}", "pyramid"),
    conda:
        "../../envs/bioingest.yaml"
    threads: image_threads
    resources:
        mem_mb=IMAGE_MEM_MB,
        runtime=image_runtime,
    params:
        warm=WARM,
        store=STORE_OPTIONS,
        method=pyramid_method,
        min_size=config["pyramid_min_size"],
        study=study_option,
    message:
        "pyramid {wildcards.dataset}: write the OME-Zarr, linking the levels convert wrote"
    shell:
        "bioingest pyramid {input.zarr:q} --ome-xml {input.ome_xml:q} --out {output:q} "
        "--source-json {input.source_json:q} "
        "--name {wildcards.dataset:q} {params.store} --method {params.method:q} "
        "--min-size {params.min_size} {params.study} --threads {threads} {params.warm} "
        "--log {log:q}"
