#!/usr/bin/env bash
# A resumable RHEL 8 AMI pipeline: one `packer build` per checkpoint stage, each wrapped in
# `bldst build run`. Re-running this script after a failure skips the checkpoints that
# completed and starts again at the failed one, from the AMI the last good checkpoint left.
#
# Why one Packer build per checkpoint: Packer starts every run from a fresh instance, so a stage
# may only be skipped on a re-run if its work is already in the image the run starts from. Each
# checkpoint therefore saves an AMI and leaves its id as the stage's `ami_id` output; the next
# checkpoint starts from the build's newest `ami_id`. A re-run gets that id back from buildstate
# (`bldst build outputs`), not from a file this pipeline kept or a search of the account.
# (Inside a long-lived host, wrap single tasks instead: see ../ansible/.)
#
# Needs: bldst (or bldst_cli), packer, jq; BUILDSTATE_API_URL and BUILDSTATE_API_TOKEN.
set -euo pipefail
cd "$(dirname "$0")"

GIT_SHA=${GIT_SHA:-$(git rev-parse --short HEAD)}
BASE_AMI=${BASE_AMI:?set BASE_AMI to the RHEL 8 AMI to start from}

# Start the build, or resume the unfinished one for this commit.
BUILD_ID=$(bldst build create --platform aws --image-type rhel8 --key "aws/rhel8/$GIT_SHA" \
    --label "git_sha=$GIT_SHA" --quiet)
export BUILD_ID

# The newest checkpoint AMI of this build (the latest stage's `ami_id` output), or the base AMI
# before the first checkpoint (`build outputs` exits 3 when no stage has set the key).
last_checkpoint_ami() {
    bldst build outputs "$BUILD_ID" ami_id 2>/dev/null || echo "$BASE_AMI"
}

# checkpoint STAGE PLAYBOOK: one Packer build that applies PLAYBOOK and saves an AMI, whose id
# (from Packer's manifest, `region:ami-…`) it writes to $BLDST_OUTPUTS_FILE: `bldst build run`
# reports it as the stage's `ami_id` output with the completion. `bldst build run` skips the
# stage if it already completed, waits out a backoff after a failure or another run's lease on
# the stage, heartbeats while Packer runs, stops (exit 12) if the build is blocked, and reports
# a failure with Packer's stderr. With `--retry` a failed Packer build (a flaky mirror, a
# capacity error) is run again from the same source AMI once the server makes the retry due,
# until it succeeds or the build is blocked after max_retries failures.
checkpoint() {
    bldst build run "$BUILD_ID" --state "$1" --retry -- sh -c '
        packer build -var "source_ami=$1" -var "build_id=$BUILD_ID" -var "stage=$2" \
            -var "playbook=$3" -var "manifest=manifest-$2.json" rhel8.pkr.hcl &&
        echo "ami_id=$(jq -r ".builds[-1].artifact_id" "manifest-$2.json" | cut -d: -f2)" \
            >> "$BLDST_OUTPUTS_FILE"' sh "$(last_checkpoint_ami)" "$1" "$2"
}

packer init rhel8.pkr.hcl
checkpoint 10 ../ansible/playbooks/10-green-image.yml
checkpoint 15 ../ansible/playbooks/15-base-config.yml
checkpoint 25 ../ansible/playbooks/25-security-baseline.yml
checkpoint 55 ../ansible/playbooks/55-services.yml
checkpoint 90 ../ansible/playbooks/90-validation.yml
# Stage 100: publish. The stages this pipeline does not use (20, 30-50, 60-85, 95) are
# recorded as skipped when a later one completes.
bldst build run "$BUILD_ID" --state 100 --retry -- \
    aws ec2 modify-image-attribute --image-id "$(last_checkpoint_ami)" \
    --launch-permission 'Add=[{Group=all}]'
bldst build get "$BUILD_ID"
