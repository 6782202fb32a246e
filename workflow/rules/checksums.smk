rule source_fixity:
    input:
        unpack(dataset_files),
    output:
        f"{OUT}/{{dataset}}/source-sha256.txt",
    log:
        f"{OUT}/logs/{{dataset}}/source_fixity.log",
    conda:
        "../../envs/bioingest.yaml"
    params:
        root=source_root,
    message:
        "fixity {wildcards.dataset}: SHA-256 of the source files before anything reads them"
    shell:
        "bioingest checksum sources {input.source:q} {input.companions:q} "
        "--root {params.root:q} --out {output:q} --log {log:q}"


rule bia_file_list:
    input:
        records=dataset_records,
        study=study_file,
    output:
        f"{OUT}/bia-file-list.tsv",
    log:
        f"{OUT}/logs/bia_file_list.log",
    localrule: True
    conda:
        "../../envs/bioingest.yaml"
    params:
        out_dir=output_folder,
        study=study_option,
    message:
        "BioImage Archive file list"
    shell:
        "bioingest provenance bia-list {params.out_dir:q} {params.study} --out {output:q} "
        "--log {log:q}"


rule manifest:
    input:
        deliverables,
        fixity=source_fixities,
        sources=all_sources,
    output:
        f"{OUT}/manifest-sha256.txt",
    log:
        f"{OUT}/logs/manifest.log",
    conda:
        "../../envs/bioingest.yaml"
    threads: 2
    params:
        out_dir=output_folder,
        root=sources_root,
    message:
        "manifest: re-check the sources, then SHA-256 of every output file"
    shell:
        "bioingest checksum manifest {params.out_dir:q} --sources-root {params.root:q} "
        "--threads {threads} --out {output:q} --log {log:q}"


rule provenance:
    input:
        manifest=f"{OUT}/manifest-sha256.txt",
        fixity=source_fixities,
        sources=all_sources,
        study=study_file,
    output:
        f"{OUT}/ro-crate-metadata.json",
    log:
        f"{OUT}/logs/provenance.log",
    localrule: True
    conda:
        "../../envs/bioingest.yaml"
    params:
        out_dir=output_folder,
        study=study_option,
        config_json=config_json,
    message:
        "provenance: Workflow Run RO-Crate of this run"
    shell:
        "bioingest provenance crate {params.out_dir:q} --sources {input.sources:q} "
        "{params.study} --config-json {params.config_json:q} --log {log:q}"
