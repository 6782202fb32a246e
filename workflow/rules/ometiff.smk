# The pyramidal OME-TIFF of every dataset, when the target or ome_tiff asks for it
# (bioingest.targets); bioingest.plan's deliverables() lists them (ome_tiffs). With
# ome_zarr: false it is the delivered image, written from the intermediate store.


rule ome_tiff:
    input:
        store=DATASET_STORE,
        ome_xml=layout.ome_xml(OUT, "{dataset}"),
        metadata=layout.metadata(OUT, "{dataset}"),
        # a recorded failure (then a note is written); the resource estimates (pixel bytes)
        source_json=layout.source_json(OUT, "{dataset}"),
    output:
        layout.ome_tiff(OUT, "{dataset}"),
    log:
        layout.dataset_log(OUT, "{dataset}", "ome_tiff"),
    conda:
        "../../envs/bioingest.yaml"
    resources:
        mem_mb=IMAGE_MEM_MB,
        runtime=image_runtime,
    message:
        "ome-tiff {wildcards.dataset}: pyramidal OME-TIFF of the OME-Zarr"
    shell:
        "bioingest ome-tiff {input.store:q} --ome-xml {input.ome_xml:q} "
        "--metadata {input.metadata:q} --source-json {input.source_json:q} "
        "--out {output:q} --log {log:q}"
