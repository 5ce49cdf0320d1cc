//! `command: start`: starts a build, or resumes the unfinished build with the same key, and
//! sets the build's outputs.

use buildstate_client::failure::exit;
use buildstate_client::Client;
use buildstate_domain::wire::StartBuild;

use crate::commands::Level;
use crate::inputs::{Inputs, Summary};
use crate::step::{Failure, Step};
use crate::summary;

impl Step<'_, '_> {
    pub(crate) async fn start(&mut self, client: &Client, inputs: &Inputs) -> Result<u8, Failure> {
        let (Some(platform), Some(image_type)) = (&inputs.platform, &inputs.image_type) else {
            return Err(Failure::new(exit::USAGE, "input `platform`: required"));
        };
        let key = inputs
            .key
            .clone()
            .or_else(|| self.run.default_key(platform, image_type));
        let request = StartBuild {
            platform: platform.clone(),
            image_type: image_type.clone(),
            description: inputs.description.clone(),
            key: key.clone(),
            labels: inputs.labels.clone(),
            max_retries: inputs.max_retries,
            retry_policy: inputs.retry_policy.clone(),
        };
        self.log.group("buildstate: start");
        let started = client
            .start_build(&request)
            .await
            .map_err(|error| Failure::api("cannot start the build", &error))?;
        if let Some(warning) = &started.warning {
            self.log.annotate(Level::Warning, warning);
        }
        let build = &started.build;
        self.set("resumed", if started.resumed { "true" } else { "false" })?;
        self.set_build_outputs(build)?;
        let key_text = key.map(|key| format!(" (key `{key}`)")).unwrap_or_default();
        if started.resumed {
            self.log.line(&format!(
                "resumed build `{}`{key_text} at stage {} ({}), {}, stage attempt {}",
                build.id,
                build.state,
                build.state_name,
                build.status,
                summary::attempt(build)
            ));
        } else {
            self.log
                .line(&format!("started build `{}`{key_text}", build.id));
        }
        let history = self.history(client, &build.id).await?;
        if inputs.summary != Summary::None {
            let context = summary::Context {
                resumed: Some(started.resumed),
                ..self.summary_context(inputs, build)
            };
            self.write_summary(&summary::ladder(build, &history, &context))?;
        }
        self.post_commit_status(inputs, build).await?;
        Ok(exit::SUCCESS)
    }
}
