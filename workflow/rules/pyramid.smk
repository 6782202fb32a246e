rule pyramid:
    input:
        zarr=intermediate_store,
        ome_xml=f"{OUT}/{{dataset}}/{{dataset}}.ome.xml",
        source_json=f"{OUT}/{{dataset}}/{{dataset}}.source.json",
        study=study_file,
    output:
        directory(f"{OUT}/{{dataset}}/{{dataset}}.ome.zarr"),
    log:
        f"{OUT}/logs/{{dataset}}/pyramid.log",
    conda:
        "../../envs/bioingest.yaml"
    resources:
        mem_mb=image_mem_mb,
        runtime=image_runtime,
    params:
        ngff_version=str(config["ngff_version"]),
        chunk_size=config["chunk_size"],
        shard_chunks=config["shard_chunks"],
        compression_level=config["compression_level"],
        method=pyramid_method,
        min_size=config["pyramid_min_size"],
        study=study_option,
    message:
        "pyramid {wildcards.dataset}: write the final OME-Zarr with multiscale levels"
    shell:
        "bioingest pyramid {input.zarr:q} --ome-xml {input.ome_xml:q} --out {output:q} "
        "--source-json {input.source_json:q} "
        "--name {wildcards.dataset:q} --ngff-version {params.ngff_version:q} "
        "--chunk-size {params.chunk_size} --shard-chunks {params.shard_chunks} "
        "--compression-level {params.compression_level} --method {params.method:q} "
        "--min-size {params.min_size} {params.study} --log {log:q}"
