# Group the input files into acquisitions as Bio-Formats does, hashing each file before
# anything opens it. A checkpoint: the datasets, and so every later job, come from it.
checkpoint inventory:
    input:
        sheet=sample_sheet,
    output:
        tsv=layout.inventory_tsv(OUT),
        json=INVENTORY,
    log:
        layout.run_log(OUT, "inventory"),
    conda:
        "../../envs/bioingest.yaml"
    threads: 2
    resources:
        java_heap_mb=config["java_heap_mb"],
        mem_mb=config["java_heap_mb"] + 512,
    params:
        source=inventory_source,
        # Not used by the command: a new value (a file added, changed or removed) reruns it.
        listing=LISTING,
        cache=layout.inventory_cache(OUT),
        exclude=excluded_output,
        min_age=config["min_file_age_s"],
        jar=config["bioformats_jar"],
        maven=config["bioformats_maven"],
        jvm_server=jvm_server_option(),
        # The inventory runs here, and starts the warm Python for the jobs after it.
        warm=WARM,
    message:
        "inventory: group the input files into acquisitions"
    shell:
        "bioingest inventory {params.source:q} --tsv {output.tsv:q} --json {output.json:q} "
        "--cache {params.cache:q} {params.exclude} --min-age-s {params.min_age} "
        "--threads {threads} --jar={params.jar:q} --maven={params.maven:q} "
        "--java-heap-mb {resources.java_heap_mb} {params.jvm_server} {params.warm} "
        "--log {log:q}"
