# Source fixity is recorded by the inventory (hashes) and convert (source-sha256.txt).


rule bia_file_list:
    input:
        records=dataset_records,
        failed=FAILED,
        study=STUDY_FILE,
    output:
        layout.bia_file_list(OUT),
    log:
        layout.run_log(OUT, "bia_file_list"),
    localrule: True
    conda:
        "../../envs/bioingest.yaml"
    params:
        warm=WARM,
        out_dir=output_folder,
        study=study_option,
        images=bia_options,
    message:
        "BioImage Archive file list"
    shell:
        "bioingest provenance bia-list {params.out_dir:q} --records {input.records:q} "
        "--failed {input.failed:q} {params.images} "
        "{params.study} --out {output:q} "
        "{params.warm} --log {log:q}"


rule manifest:
    input:
        outputs=deliverables,
        failed=FAILED,
        fixity=source_fixities,
        sources=all_sources,
    output:
        layout.manifest(OUT),
    log:
        layout.run_log(OUT, "manifest"),
    conda:
        "../../envs/bioingest.yaml"
    threads: 2
    params:
        warm=WARM,
        out_dir=output_folder,
        root=sources_root,
    message:
        "manifest: re-check the sources, then SHA-256 of every output file"
    shell:
        "bioingest checksum manifest {params.out_dir:q} --outputs {input.outputs:q} "
        "--fixity {input.fixity:q} --failed {input.failed:q} --sources-root {params.root:q} "
        "--threads {threads} --out {output:q} {params.warm} --log {log:q}"


rule provenance:
    input:
        manifest=layout.manifest(OUT),
        sources=all_sources,
        # The checksums of the sources the manifest step has just re-checked.
        fixity=source_fixities,
        study=STUDY_FILE,
    output:
        crate=layout.run_crate(OUT),
        # The crate includes the workflow that ran: a copy, written with it.
        workflow=directory(layout.workflow_copy(OUT)),
    log:
        layout.run_log(OUT, "provenance"),
    localrule: True
    conda:
        "../../envs/bioingest.yaml"
    params:
        warm=WARM,
        out_dir=output_folder,
        root=sources_root,
        study=study_option,
        config_json=config_json,
        # The checkout that ran (copied into the crate), wherever the package lives.
        workflow_dir=workflow.basedir,
    message:
        "provenance: Workflow Run RO-Crate of this run"
    shell:
        "bioingest provenance crate {params.out_dir:q} --sources {input.sources:q} "
        "--fixity {input.fixity:q} "
        "--sources-root {params.root:q} {params.study} --config-json {params.config_json:q} "
        "--workflow-dir {params.workflow_dir:q} {params.warm} --log {log:q}"
