# One checkpoint of the RHEL 8 image (driven by build.sh): start an instance from
# `source_ami`, apply one stage's playbook, and save an AMI tagged with the build id and the
# stage, which the next checkpoint starts from.
#
# The Ansible provisioner's own tasks may call bldst too (see ../ansible/site.yml); the
# BUILDSTATE_* variables come from the environment Packer was started in, never from here.

packer {
  required_plugins {
    amazon = {
      version = ">= 1.3.0"
      source  = "github.com/hashicorp/amazon"
    }
    ansible = {
      version = ">= 1.1.0"
      source  = "github.com/hashicorp/ansible"
    }
  }
}

variable "source_ami" {
  type        = string
  description = "The last checkpoint's AMI, or the base RHEL 8 AMI"
}

variable "build_id" {
  type        = string
  description = "The buildstate build id (bldst build create --quiet)"
}

variable "stage" {
  type        = number
  description = "The state code this checkpoint completes"
}

variable "playbook" {
  type = string
}

variable "manifest" {
  type        = string
  default     = "manifest.json"
  description = "Where Packer writes the AMI id it made (build.sh turns it into an `ami_id` output)"
}

variable "region" {
  type    = string
  default = "us-east-1"
}

source "amazon-ebs" "rhel8" {
  region        = var.region
  source_ami    = var.source_ami
  instance_type = "t3.medium"
  ssh_username  = "ec2-user"
  ami_name      = "rhel8-${var.build_id}-stage-${var.stage}"
  tags = {
    buildstate_build = var.build_id
    buildstate_stage = var.stage
  }
}

build {
  sources = ["source.amazon-ebs.rhel8"]

  provisioner "ansible" {
    playbook_file   = var.playbook
    extra_arguments = ["--extra-vars", "build_id=${var.build_id} stage=${var.stage}"]
  }

  # The AMI id for build.sh to report as the stage's `ami_id` output.
  post-processor "manifest" {
    output     = var.manifest
    strip_path = true
  }
}
