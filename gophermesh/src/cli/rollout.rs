//! `rollout`'s subcommands and flags.

use clap::{Args, Subcommand};

use super::ControlArgs;

#[derive(Debug, Subcommand)]
pub(crate) enum RolloutWhat {
    /// Move ROUTE's traffic to one of its targets step by step: each step is kept for an
    /// interval and checked (the target's success rate and p99 since the step, from the
    /// Envoys' counts); too few requests hold the step, enough failed checks put the route
    /// back as it was, and the last step makes the target the route's only target.
    Start(RolloutStartArgs),
    /// Show the rollouts: phase, weight, checks and their last events.
    Status {
        /// Only the rollout of this route.
        route: Option<String>,
        /// Only the rollouts of this mesh.
        #[arg(long)]
        mesh: Option<String>,
        /// How many of each rollout's last events to print.
        #[arg(long, default_value_t = 8)]
        events: usize,
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Stop ROUTE's rollout where it is (its weights stay).
    Pause(RolloutActArgs),
    /// Go on with ROUTE's paused rollout from its step (its weights are set again).
    Resume(RolloutActArgs),
    /// Stop ROUTE's rollout for good and put the route back as it was before it.
    Abort(RolloutActArgs),
}

/// `rollout start`'s flags. Left out, each is as Flagger's App Mesh tutorial set it.
#[derive(Debug, Args)]
pub(crate) struct RolloutStartArgs {
    /// The route's name.
    pub(crate) route: String,
    /// The virtual node to move the traffic to: one of the route's targets (add it with
    /// weight 0 first).
    #[arg(long)]
    pub(crate) to: String,
    /// The mesh of the route (the only one by default).
    #[arg(long)]
    pub(crate) mesh: Option<String>,
    /// The virtual router, when more than one has a route of that name.
    #[arg(long)]
    pub(crate) router: Option<String>,
    /// The target's weight (percent) at each step, increasing [default:
    /// 5,10,15,20,25,30,35,40,45,50,100].
    #[arg(long, value_delimiter = ',')]
    pub(crate) steps: Option<Vec<i64>>,
    /// How long each step is kept before its check [default: 1m].
    #[arg(long)]
    pub(crate) interval: Option<String>,
    /// The least share of non-5xx answers, in percent, a check passes with [default: 99].
    #[arg(long)]
    pub(crate) min_success: Option<f64>,
    /// The highest p99 response time a check passes with [default: 500ms].
    #[arg(long)]
    pub(crate) max_p99: Option<String>,
    /// Fewer requests to the target in a check's window hold the step [default: 20].
    #[arg(long)]
    pub(crate) min_requests: Option<u64>,
    /// This many failed checks put the route back as it was [default: 5].
    #[arg(long)]
    pub(crate) max_failed_checks: Option<u32>,
    /// NAME=VALUE: first an A/B stage, in which only the requests with this header go to
    /// the target (by a route of their own, ROUTE-ab, ahead of ROUTE, whose weights stay);
    /// once it passes a check, the steps begin and that route goes.
    #[arg(long, value_name = "NAME=VALUE")]
    pub(crate) header: Option<String>,
    #[command(flatten)]
    pub(crate) control: ControlArgs,
}

/// Which rollout `pause`, `resume` and `abort` act on.
#[derive(Debug, Args)]
pub(crate) struct RolloutActArgs {
    /// The route's name.
    pub(crate) route: String,
    /// The mesh of the route (the only one by default).
    #[arg(long)]
    pub(crate) mesh: Option<String>,
    /// The virtual router, when more than one has a rollout of a route of that name.
    #[arg(long)]
    pub(crate) router: Option<String>,
    #[command(flatten)]
    pub(crate) control: ControlArgs,
}
