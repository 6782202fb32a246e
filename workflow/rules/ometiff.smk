# The pyramidal OME-TIFF of every dataset, when the target or ome_tiff asks for it
# (STORE: pyramid.smk); common.smk's deliverables() lists them (ome_tiffs).


rule ome_tiff:
    input:
        store=f"{OUT}/{{dataset}}/{{dataset}}.ome.zarr",
        ome_xml=f"{OUT}/{{dataset}}/{{dataset}}.ome.xml",
        metadata=f"{OUT}/{{dataset}}/metadata.json",
        # read by the resource estimates (pixel bytes)
        source_json=f"{OUT}/{{dataset}}/{{dataset}}.source.json",
    output:
        f"{OUT}/{{dataset}}/{{dataset}}.ome.tif",
    log:
        f"{OUT}/logs/{{dataset}}/ome_tiff.log",
    conda:
        "../../envs/bioingest.yaml"
    resources:
        mem_mb=image_mem_mb,
        runtime=image_runtime,
    message:
        "ome-tiff {wildcards.dataset}: pyramidal OME-TIFF next to the OME-Zarr"
    shell:
        "bioingest ome-tiff {input.store:q} --ome-xml {input.ome_xml:q} "
        "--metadata {input.metadata:q} --out {output:q} --log {log:q}"
