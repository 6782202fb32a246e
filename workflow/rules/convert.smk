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
    message:
        "convert {wildcards.dataset}: read the source once into a lossless intermediate Zarr"
    shell:
        "bioingest convert {input.source:q} --zarr {output.zarr:q} "
        "--ome-xml {output.ome_xml:q} --source-json {output.source_json:q} --reader {params.reader:q} "
        "--tile-size {params.tile_size} --jar={params.jar:q} --maven={params.maven:q} "
        "--java-heap-mb {resources.java_heap_mb} --log {log:q}"
