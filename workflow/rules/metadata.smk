rule metadata:
    input:
        ome_xml=f"{OUT}/{{dataset}}/{{dataset}}.ome.xml",
        source_json=f"{OUT}/{{dataset}}/{{dataset}}.source.json",
        store=f"{OUT}/{{dataset}}/{{dataset}}.ome.zarr",
        study=study_file,
    output:
        f"{OUT}/{{dataset}}/metadata.json",
    log:
        f"{OUT}/logs/{{dataset}}/metadata.log",
    conda:
        "../../envs/bioingest.yaml"
    resources:
        mem_mb=image_mem_mb,
        runtime=image_runtime,
    params:
        study=study_option,
    message:
        "metadata {wildcards.dataset}: normalised record, sanity flags, completeness score"
    shell:
        "bioingest metadata {input.ome_xml:q} --dataset {wildcards.dataset:q} "
        "--source-json {input.source_json:q} --store {input.store:q} {params.study} "
        "--out {output:q} --log {log:q}"


rule metadata_tables:
    input:
        dataset_records,
    output:
        images=f"{OUT}/summary/images.tsv",
        channels=f"{OUT}/summary/channels.tsv",
        images_parquet=f"{OUT}/summary/images.parquet",
        channels_parquet=f"{OUT}/summary/channels.parquet",
    log:
        f"{OUT}/logs/metadata_tables.log",
    localrule: True
    conda:
        "../../envs/bioingest.yaml"
    params:
        out_dir=output_folder,
    message:
        "summary tables: one row per series (images) and per channel (channels)"
    shell:
        "bioingest tables {input:q} --table metadata --out-dir {params.out_dir:q} "
        "--log {log:q}"
