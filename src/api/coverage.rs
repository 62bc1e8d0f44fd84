//! Which nodes a cluster-wide answer covers. Listings and fan-outs count only
//! the nodes that answered in time, and say so rather than hide a missing one.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `"partial":true,"missingNodes":[…]` when a node did not answer in time;
/// absent on a single node and when every node answered.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Coverage {
    /// True when a node did not answer in time: the counts leave it out.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// The ids of the nodes that did not answer in time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_nodes: Vec<String>,
}

impl Coverage {
    /// The coverage of an answer `missing_nodes` did not take part in.
    pub fn without(missing_nodes: Vec<String>) -> Coverage {
        Coverage {
            partial: !missing_nodes.is_empty(),
            missing_nodes,
        }
    }
}
