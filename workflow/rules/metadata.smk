rule metadata:
    input:
        ome_xml=layout.ome_xml(OUT, "{dataset}"),
        source_json=layout.source_json(OUT, "{dataset}"),
        intermediate=intermediate_store,
        study=STUDY_FILE,
    output:
        layout.metadata(OUT, "{dataset}"),
    log:
        layout.dataset_log(OUT, "{dataset}", "metadata"),
    conda:
        "../../envs/bioingest.yaml"
    resources:
        mem_mb=IMAGE_MEM_MB,
        runtime=image_runtime,
    params:
        warm=WARM,
        study=study_option,
    message:
        "metadata {wildcards.dataset}: normalised record, sanity flags, completeness score"
    shell:
        "bioingest metadata {input.ome_xml:q} --dataset {wildcards.dataset:q} "
        "--source-json {input.source_json:q} --intermediate {input.intermediate:q} "
        "{params.study} --out {output:q} {params.warm} --log {log:q}"


rule metadata_tables:
    input:
        dataset_records,
    output:
        images=layout.summary_table(OUT, "images", "tsv"),
        channels=layout.summary_table(OUT, "channels", "tsv"),
        images_parquet=layout.summary_table(OUT, "images", "parquet"),
        channels_parquet=layout.summary_table(OUT, "channels", "parquet"),
    log:
        layout.run_log(OUT, "metadata_tables"),
    localrule: True
    conda:
        "../../envs/bioingest.yaml"
    params:
        warm=WARM,
        out_dir=output_folder,
    message:
        "summary tables: one row per series (images) and per channel (channels)"
    shell:
        "bioingest tables {input:q} --table metadata --out-dir {params.out_dir:q} "
        "{params.warm} --log {log:q}"
