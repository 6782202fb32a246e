rule qc:
    input:
        intermediate=intermediate_store,
        metadata=f"{OUT}/{{dataset}}/metadata.json",
        source_json=f"{OUT}/{{dataset}}/{{dataset}}.source.json",
        store=f"{OUT}/{{dataset}}/{{dataset}}.ome.zarr",
    output:
        qc=f"{OUT}/{{dataset}}/qc.json",
        page=f"{OUT}/{{dataset}}/qc.html",
        thumbnails=report(
            directory(f"{OUT}/{{dataset}}/thumbnails"),
            patterns=["{name}.png"],
            caption="../report/thumbnail.rst",
            category="Thumbnails",
            subcategory="{dataset}",
        ),
    log:
        f"{OUT}/logs/{{dataset}}/qc.log",
    conda:
        "../../envs/bioingest.yaml"
    resources:
        mem_mb=image_mem_mb,
        runtime=image_runtime,
    params:
        options=qc_options,
    message:
        "qc {wildcards.dataset}: metrics, pass/warn/fail/n/a flags, thumbnails, QC page"
    shell:
        "bioingest qc {input.intermediate:q} --metadata {input.metadata:q} "
        "--store {input.store:q} --source-json {input.source_json:q} "
        "--out {output.qc:q} --thumbnails {output.thumbnails:q} --page {output.page:q} "
        "{params.options} --log {log:q}"


rule qc_table:
    input:
        qc_reports,
    output:
        report(
            f"{OUT}/summary/qc.tsv",
            caption="../report/qc_table.rst",
            category="Summary",
        ),
    log:
        f"{OUT}/logs/qc_table.log",
    localrule: True
    conda:
        "../../envs/bioingest.yaml"
    params:
        out_dir=output_folder,
    message:
        "summary table: QC per series and channel"
    shell:
        "bioingest tables {input:q} --table qc --out-dir {params.out_dir:q} --log {log:q}"
