rule convert:
    input:
        unpack(dataset_files),
    output:
        zarr=intermediate(layout.intermediate(OUT, "{dataset}")),
        ome_xml=layout.ome_xml(OUT, "{dataset}"),
        source_json=layout.source_json(OUT, "{dataset}"),
        fixity=layout.source_fixity(OUT, "{dataset}"),
    log:
        layout.dataset_log(OUT, "{dataset}", "convert"),
    conda:
        "../../envs/bioingest.yaml"
    threads: image_threads
    resources:
        java_heap_mb=config["java_heap_mb"],
        mem_mb=CONVERT_MEM_MB,
        runtime=convert_runtime,
    params:
        warm=WARM,
        dataset=convert_options,
        reader=config["reader"],
        tile_size=config["tile_size"],
        jar=config["bioformats_jar"],
        maven=config["bioformats_maven"],
        jvm_server=jvm_server_option(),
        store=STORE_OPTIONS,
        method=pyramid_method,
        min_size=config["pyramid_min_size"],
    message:
        "convert {wildcards.dataset}: record source fixity, then read the source once "
        "into the final levels and hash its pixels"
    shell:
        "bioingest convert {input.source:q} --zarr {output.zarr:q} "
        "--ome-xml {output.ome_xml:q} --source-json {output.source_json:q} "
        "--fixity {output.fixity:q} --files {input.source:q} {input.companions:q} "
        "{params.dataset} --reader {params.reader:q} --tile-size {params.tile_size} "
        "--jar={params.jar:q} --maven={params.maven:q} "
        "--java-heap-mb {resources.java_heap_mb} {params.jvm_server} {params.store} "
        "--method {params.method:q} --min-size {params.min_size} "
        "--threads {threads} --record-failure {params.warm} --log {log:q}"


# Sources above split_series_above_mb: convert writes the first series_per_job series,
# each convert_part job the next ones, and assemble joins them into a new store.
rule convert_part:
    input:
        unpack(dataset_files),
    output:
        temp(directory(layout.part(OUT, "{dataset}", "{part}"))),
    log:
        layout.part_log(OUT, "{dataset}", "{part}"),
    conda:
        "../../envs/bioingest.yaml"
    threads: image_threads
    resources:
        java_heap_mb=config["java_heap_mb"],
        mem_mb=CONVERT_MEM_MB,
        runtime=part_runtime,
    params:
        warm=WARM,
        series=part_series,
        single_file=single_file_option,
        reader=config["reader"],
        tile_size=config["tile_size"],
        jar=config["bioformats_jar"],
        maven=config["bioformats_maven"],
        jvm_server=jvm_server_option(),
        store=STORE_OPTIONS,
        method=pyramid_method,
        min_size=config["pyramid_min_size"],
    message:
        "convert_part {wildcards.dataset} part {wildcards.part}: series {params.series}"
    shell:
        "bioingest convert {input.source:q} --zarr {output:q} --series {params.series:q} "
        "{params.single_file} --reader {params.reader:q} --tile-size {params.tile_size} "
        "--jar={params.jar:q} --maven={params.maven:q} "
        "--java-heap-mb {resources.java_heap_mb} {params.jvm_server} {params.store} "
        "--method {params.method:q} --min-size {params.min_size} "
        "--threads {threads} {params.warm} --log {log:q}"


rule assemble:
    input:
        first=layout.intermediate(OUT, "{dataset}"),
        parts=later_parts,
        source_json=layout.source_json(OUT, "{dataset}"),
    output:
        intermediate(layout.assembled(OUT, "{dataset}")),
    log:
        layout.dataset_log(OUT, "{dataset}", "assemble"),
    conda:
        "../../envs/bioingest.yaml"
    message:
        "assemble {wildcards.dataset}: join the converted parts into one store"
    shell:
        "bioingest assemble {input.first:q} {input.parts:q} "
        "--source-json {input.source_json:q} --zarr {output:q} --log {log:q}"


# Which datasets failed on bad input: the inventory's failures and those convert recorded
# (later stages of such a dataset write only a failure record), and with
# qc_fail_policy: stop those whose QC failed. Run-level outputs leave them out.
rule outcomes:
    input:
        inventory=INVENTORY,
        described=described,
        qc=qc_stop_reports,
    output:
        FAILED,
    log:
        layout.run_log(OUT, "outcomes"),
    localrule: True
    conda:
        "../../envs/bioingest.yaml"
    params:
        warm=WARM,
    message:
        "outcomes: list the datasets that failed on bad input"
    shell:
        "bioingest outcomes {input.inventory:q} {input.described:q} --qc-stop {input.qc:q} "
        "--out {output:q} {params.warm} --log {log:q}"
