//! `command: get`: reads the build and sets its outputs.

use buildstate_client::failure::exit;
use buildstate_client::Client;

use crate::inputs::{Inputs, Summary};
use crate::step::{Failure, Step};
use crate::summary;

impl Step<'_, '_> {
    pub(crate) async fn get(&mut self, client: &Client, inputs: &Inputs) -> Result<u8, Failure> {
        let id = self.resolve(client, inputs).await?;
        let build = client
            .get_build(&id)
            .await
            .map_err(|error| Failure::api(&format!("cannot read build `{id}`"), &error))?;
        self.set_build_outputs(&build)?;
        self.log.line(&format!(
            "build `{id}`: stage {} ({}), {}, stage attempt {}",
            build.state,
            build.state_name,
            build.status,
            summary::attempt(&build)
        ));
        if inputs.summary != Summary::None {
            let history = self.history(client, &id).await?;
            let context = self.summary_context(inputs, &build);
            self.write_summary(&summary::ladder(&build, &history, &context))?;
        }
        self.post_commit_status(inputs, &build).await?;
        Ok(exit::SUCCESS)
    }
}
