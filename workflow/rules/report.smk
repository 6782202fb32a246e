rule report:
    input:
        qc=qc_reports,
        records=dataset_records,
        tables=layout.qc_table(OUT),
        inventory=layout.inventory_tsv(OUT),
        failed=FAILED,
    output:
        report(layout.report(OUT), caption="../report/report.rst", category="Summary"),
    log:
        layout.run_log(OUT, "report"),
    conda:
        "../../envs/bioingest.yaml"
    params:
        warm=WARM,
        out_dir=output_folder,
        datasets=dataset_names,
    message:
        "report: the run's summary page, linking to each dataset's qc.html"
    shell:
        "bioingest report {params.out_dir:q} --datasets {params.datasets} "
        "--failed {input.failed:q} --inventory {input.inventory:q} --out {output:q} "
        "{params.warm} --log {log:q}"
