rule report:
    input:
        qc=qc_reports,
        records=dataset_records,
        tables=f"{OUT}/summary/qc.tsv",
        inventory=f"{OUT}/inventory.tsv",
        failed=FAILED,
    output:
        report(f"{OUT}/report.html", caption="../report/report.rst", category="Summary"),
    log:
        f"{OUT}/logs/report.log",
    conda:
        "../../envs/bioingest.yaml"
    params:
        out_dir=output_folder,
        datasets=dataset_names,
    message:
        "report: the run's summary page, linking to each dataset's qc.html"
    shell:
        "bioingest report {params.out_dir:q} --datasets {params.datasets} "
        "--failed {input.failed:q} --inventory {input.inventory:q} --out {output:q} "
        "--log {log:q}"
