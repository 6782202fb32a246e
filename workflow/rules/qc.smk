rule qc:
    input:
        intermediate=intermediate_store,
        metadata=layout.metadata(OUT, "{dataset}"),
        source_json=layout.source_json(OUT, "{dataset}"),
        store=DATASET_STORE,
    output:
        qc=layout.qc(OUT, "{dataset}"),
        page=layout.qc_page(OUT, "{dataset}"),
        thumbnails=report(
            directory(layout.thumbnails(OUT, "{dataset}")),
            patterns=["{name}.png"],
            caption="../report/thumbnail.rst",
            category="Thumbnails",
            subcategory="{dataset}",
        ),
    log:
        layout.dataset_log(OUT, "{dataset}", "qc"),
    # Before the run-level tables that are ready as soon: they then run side by side.
    priority: 1
    conda:
        "../../envs/bioingest.yaml"
    threads: image_threads
    resources:
        mem_mb=IMAGE_MEM_MB,
        runtime=image_runtime,
    params:
        warm=WARM,
        options=QC_OPTIONS,
    message:
        "qc {wildcards.dataset}: metrics, pass/warn/fail/n/a flags, thumbnails, QC page"
    shell:
        "bioingest qc {input.intermediate:q} --metadata {input.metadata:q} "
        "--store {input.store:q} --source-json {input.source_json:q} "
        "--out {output.qc:q} --thumbnails {output.thumbnails:q} --page {output.page:q} "
        "{params.options} --threads {threads} {params.warm} --log {log:q}"


rule qc_table:
    input:
        qc_reports,
    output:
        report(
            layout.qc_table(OUT),
            caption="../report/qc_table.rst",
            category="Summary",
        ),
    log:
        layout.run_log(OUT, "qc_table"),
    localrule: True
    conda:
        "../../envs/bioingest.yaml"
    params:
        warm=WARM,
        out_dir=output_folder,
    message:
        "summary table: QC per series and channel"
    shell:
        "bioingest tables {input:q} --table qc --out-dir {params.out_dir:q} {params.warm} "
        "--log {log:q}"
