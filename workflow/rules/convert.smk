rule convert:
    input:
        unpack(dataset_files),
        fixity=f"{OUT}/{{dataset}}/source-sha256.txt",
    output:
        zarr=intermediate(f"{OUT}/intermediate/{{dataset}}.zarr"),
        ome_xml=f"{OUT}/{{dataset}}/{{dataset}}.ome.xml",
        source_json=f"{OUT}/{{dataset}}/{{dataset}}.source.json",
    log:
        f"{OUT}/logs/{{dataset}}/convert.log",
    wildcard_constraints:
        dataset=WHOLE,
    conda:
        "../../envs/bioingest.yaml"
    resources:
        java_heap_mb=config["java_heap_mb"],
        mem_mb=convert_mem_mb,
        runtime=convert_runtime,
    params:
        reader=config["reader"],
        tile_size=config["tile_size"],
        jar=config["bioformats_jar"],
        maven=config["bioformats_maven"],
        jvm_server=jvm_server_option(),
    message:
        "convert {wildcards.dataset}: read the source once into a lossless intermediate Zarr"
    shell:
        "bioingest convert {input.source:q} --zarr {output.zarr:q} "
        "--ome-xml {output.ome_xml:q} --source-json {output.source_json:q} --reader {params.reader:q} "
        "--tile-size {params.tile_size} --jar={params.jar:q} --maven={params.maven:q} "
        "--java-heap-mb {resources.java_heap_mb} {params.jvm_server} --log {log:q}"


# Sources above split_series_above_mb: describe once, convert series_per_job series per
# job, then join the parts. The jobs of one dataset write disjoint part stores.
checkpoint describe_source:
    input:
        unpack(dataset_files),
        fixity=f"{OUT}/{{dataset}}/source-sha256.txt",
    output:
        ome_xml=f"{OUT}/{{dataset}}/{{dataset}}.ome.xml",
        source_json=f"{OUT}/{{dataset}}/{{dataset}}.source.json",
    log:
        f"{OUT}/logs/{{dataset}}/describe_source.log",
    wildcard_constraints:
        dataset=SPLIT,
    conda:
        "../../envs/bioingest.yaml"
    resources:
        java_heap_mb=config["java_heap_mb"],
        mem_mb=convert_mem_mb,
    params:
        reader=config["reader"],
        jar=config["bioformats_jar"],
        maven=config["bioformats_maven"],
        jvm_server=jvm_server_option(),
    message:
        "describe_source {wildcards.dataset}: list the series to convert in parts"
    shell:
        "bioingest convert {input.source:q} --ome-xml {output.ome_xml:q} "
        "--source-json {output.source_json:q} --reader {params.reader:q} "
        "--jar={params.jar:q} --maven={params.maven:q} "
        "--java-heap-mb {resources.java_heap_mb} {params.jvm_server} --log {log:q}"


rule convert_part:
    input:
        unpack(dataset_files),
        source_json=f"{OUT}/{{dataset}}/{{dataset}}.source.json",
    output:
        temp(directory(f"{OUT}/intermediate/{{dataset}}.parts/{{part}}.zarr")),
    log:
        f"{OUT}/logs/{{dataset}}/convert_part{{part}}.log",
    wildcard_constraints:
        dataset=SPLIT,
        part=r"\d+",
    conda:
        "../../envs/bioingest.yaml"
    resources:
        java_heap_mb=config["java_heap_mb"],
        mem_mb=convert_mem_mb,
        runtime=part_runtime,
    params:
        series=part_series,
        reader=config["reader"],
        tile_size=config["tile_size"],
        jar=config["bioformats_jar"],
        maven=config["bioformats_maven"],
        jvm_server=jvm_server_option(),
    message:
        "convert_part {wildcards.dataset} part {wildcards.part}: series {params.series}"
    shell:
        "bioingest convert {input.source:q} --zarr {output:q} --series {params.series:q} "
        "--reader {params.reader:q} --tile-size {params.tile_size} --jar={params.jar:q} "
        "--maven={params.maven:q} --java-heap-mb {resources.java_heap_mb} "
        "{params.jvm_server} --log {log:q}"


rule assemble:
    input:
        parts=series_parts,
        source_json=f"{OUT}/{{dataset}}/{{dataset}}.source.json",
    output:
        intermediate(f"{OUT}/intermediate/{{dataset}}.zarr"),
    log:
        f"{OUT}/logs/{{dataset}}/assemble.log",
    wildcard_constraints:
        dataset=SPLIT,
    conda:
        "../../envs/bioingest.yaml"
    message:
        "assemble {wildcards.dataset}: join the converted parts into one store"
    shell:
        "bioingest assemble {input.parts:q} --source-json {input.source_json:q} "
        "--zarr {output:q} --log {log:q}"
