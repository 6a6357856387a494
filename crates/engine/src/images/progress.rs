//! Docker's JSON message stream (pull, push, load, import, build): one object per line.

use serde::Serialize;
use tokio::sync::mpsc;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ProgressDetail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorDetail {
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Message {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "progressDetail", skip_serializing_if = "Option::is_none")]
    pub progress_detail: Option<ProgressDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(rename = "errorDetail", skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<ErrorDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux: Option<serde_json::Value>,
}

impl Message {
    pub fn status(s: impl Into<String>) -> Self {
        Self {
            status: Some(s.into()),
            ..Default::default()
        }
    }

    pub fn layer(id: &str, s: impl Into<String>) -> Self {
        Self {
            status: Some(s.into()),
            id: Some(id.to_string()),
            progress_detail: Some(ProgressDetail::default()),
            ..Default::default()
        }
    }

    pub fn bytes(id: &str, s: &str, current: u64, total: Option<u64>) -> Self {
        Self {
            status: Some(s.to_string()),
            id: Some(id.to_string()),
            progress_detail: Some(ProgressDetail {
                current: Some(current),
                total,
            }),
            progress: Some(bar(current, total)),
            ..Default::default()
        }
    }

    pub fn stream(s: impl Into<String>) -> Self {
        Self {
            stream: Some(s.into()),
            ..Default::default()
        }
    }

    pub fn error(msg: impl Into<String>) -> Self {
        let m = msg.into();
        Self {
            error: Some(m.clone()),
            error_detail: Some(ErrorDetail { message: m }),
            ..Default::default()
        }
    }

    pub fn aux(v: serde_json::Value) -> Self {
        Self {
            aux: Some(v),
            ..Default::default()
        }
    }
}

/// The rendered bar old clients print (`[=====>    ]  1.2MB/3.4MB`).
fn bar(current: u64, total: Option<u64>) -> String {
    match total {
        Some(t) if t > 0 => {
            let width = 50u64;
            let filled = (current.min(t) * width / t) as usize;
            let mut s = String::from("[");
            s.push_str(&"=".repeat(filled.saturating_sub(1)));
            if filled > 0 {
                s.push('>');
            }
            s.push_str(&" ".repeat(width as usize - filled));
            format!("{s}]  {}/{}", human(current), human(t))
        }
        _ => human(current),
    }
}

/// Sizes as Docker prints them (decimal units).
pub fn human(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else {
        format!("{v:.3}{}", units[i])
            .replace(".000", "")
            .trim_end_matches('0')
            .to_string()
    }
}

/// Where a long operation reports progress. Sending never fails the operation: a client that went
/// away must not abort a pull halfway (Docker finishes it too).
#[derive(Clone)]
pub struct Progress {
    tx: Option<mpsc::Sender<Message>>,
}

impl Progress {
    pub fn new(tx: mpsc::Sender<Message>) -> Self {
        Self { tx: Some(tx) }
    }

    pub fn none() -> Self {
        Self { tx: None }
    }

    /// Resolves when the client reading the messages has gone away (never, for
    /// [`Progress::none`]).
    pub async fn closed(&self) {
        match &self.tx {
            Some(tx) => tx.closed().await,
            None => std::future::pending().await,
        }
    }

    pub async fn send(&self, m: Message) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(m).await;
        }
    }
}
