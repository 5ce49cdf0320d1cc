#!/usr/bin/env bash
# A resumable RHEL 8 AMI pipeline: one `packer build` per checkpoint stage, each wrapped in
# `bldst build run`. Re-running this script after a failure skips the checkpoints that
# completed and starts again at the failed one, from the AMI the last good checkpoint left.
#
# Why one Packer build per checkpoint: Packer starts every run from a fresh instance, so a stage
# may only be skipped on a re-run if its work is already in the image the run starts from. Each
# checkpoint therefore saves an AMI tagged with the build id and its stage, and the next one
# starts from it. (Inside a long-lived host, wrap single tasks instead: see ../ansible/.)
#
# Needs: bldst (or bldst_cli), packer, the aws CLI; BUILDSTATE_API_URL and BUILDSTATE_API_TOKEN.
set -euo pipefail
cd "$(dirname "$0")"

GIT_SHA=${GIT_SHA:-$(git rev-parse --short HEAD)}
BASE_AMI=${BASE_AMI:?set BASE_AMI to the RHEL 8 AMI to start from}

# Start the build, or resume the unfinished one for this commit.
BUILD_ID=$(bldst build create --platform aws --image-type rhel8 --key "aws/rhel8/$GIT_SHA" \
    --label "git_sha=$GIT_SHA" --quiet)
export BUILD_ID

# The newest checkpoint AMI of this build, or the base AMI before the first checkpoint.
last_checkpoint_ami() {
    local ami
    ami=$(aws ec2 describe-images --owners self \
        --filters "Name=tag:buildstate_build,Values=$BUILD_ID" \
        --query 'sort_by(Images, &CreationDate)[-1].ImageId' --output text)
    if [ "$ami" = "None" ] || [ -z "$ami" ]; then echo "$BASE_AMI"; else echo "$ami"; fi
}

# checkpoint STAGE PLAYBOOK: one Packer build that applies PLAYBOOK and saves an AMI.
# `bldst build run` skips it if STAGE already completed, waits out a backoff after a failure,
# stops (exit 12) if the build is blocked, and reports the outcome with Packer's stderr.
checkpoint() {
    bldst build run "$BUILD_ID" --state "$1" -- \
        packer build -var "source_ami=$(last_checkpoint_ami)" -var "build_id=$BUILD_ID" \
        -var "stage=$1" -var "playbook=$2" rhel8.pkr.hcl
}

packer init rhel8.pkr.hcl
checkpoint 10 ../ansible/playbooks/10-green-image.yml
checkpoint 15 ../ansible/playbooks/15-base-config.yml
checkpoint 25 ../ansible/playbooks/25-security-baseline.yml
checkpoint 55 ../ansible/playbooks/55-services.yml
checkpoint 90 ../ansible/playbooks/90-validation.yml
# Stage 100: publish. The stages this pipeline does not use (20, 30-50, 60-85, 95) are
# recorded as skipped when a later one completes.
bldst build run "$BUILD_ID" --state 100 -- \
    aws ec2 modify-image-attribute --image-id "$(last_checkpoint_ami)" \
    --launch-permission 'Add=[{Group=all}]'
bldst build get "$BUILD_ID"
