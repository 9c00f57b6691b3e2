//! The `kafka` table options (Flink's names) and the librdkafka configurations they
//! become.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use arrow::datatypes::{DataType, SchemaRef};
use rdkafka::ClientConfig;
use tidewater_core::Result;
use tidewater_core::time::parse_duration;

use crate::TableOptions;
use crate::format::Format;
use crate::options::is_secret;

/// Every option name the connector accepts besides `properties.*`.
pub(crate) const OPTIONS: &[&str] = &[
    "topic",
    "topic-pattern",
    "format",
    "csv.field-delimiter",
    "csv.header",
    "key.format",
    "key.fields",
    "value.fields-include",
    "scan.startup.mode",
    "scan.startup.timestamp-millis",
    "scan.watermark.idle-timeout",
    "sink.delivery-guarantee",
    "sink.transactional-id-prefix",
    "sink.transaction-headers",
    "sink.partitioner",
    "dead-letter.path",
];

/// How a message's value (or key) is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordFormat {
    /// CSV or JSON, one record per message.
    Lines(Format),
    /// The bytes as one STRING column.
    Raw,
}

impl RecordFormat {
    fn parse(o: &TableOptions, key: &str, value: &str) -> Result<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "raw" => Ok(RecordFormat::Raw),
            "json" => Ok(RecordFormat::Lines(Format::Json)),
            "csv" if key == "format" => Ok(RecordFormat::Lines(Format::from_options(o)?)),
            "csv" => Ok(RecordFormat::Lines(Format::Csv {
                delimiter: b',',
                header: false,
            })),
            other => Err(o.error(
                key,
                format!("'{other}' is not supported; use 'json', 'csv' or 'raw'"),
            )),
        }
    }
}

/// The message key: its format and the columns it holds ('key.format', 'key.fields').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// 'key.format'.
    pub format: RecordFormat,
    /// Indices of 'key.fields' in the table's physical columns.
    pub fields: Vec<usize>,
}

/// Where a partition without a committed offset starts ('scan.startup.mode').
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupMode {
    /// 'earliest-offset'.
    Earliest,
    /// 'latest-offset'.
    Latest,
    /// 'group-offsets' (the default, as in Flink): the group's committed offset, else
    /// 'properties.auto.offset.reset' (default latest).
    GroupOffsets,
    /// 'timestamp': the first record at or after 'scan.startup.timestamp-millis'.
    Timestamp(i64),
}

/// What is subscribed: 'topic' (one or several, `;`-separated) or 'topic-pattern'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topics {
    /// Topic names.
    Names(Vec<String>),
    /// A regular expression over topic names.
    Pattern(String),
}

impl Topics {
    /// The subscription as librdkafka takes it (a pattern starts with `^`).
    pub fn subscription(&self) -> Vec<String> {
        match self {
            Topics::Names(n) => n.clone(),
            Topics::Pattern(p) if p.starts_with('^') => vec![p.clone()],
            Topics::Pattern(p) => vec![format!("^{p}")],
        }
    }
}

/// `properties.*` without the prefix. `Debug` hides secret values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Properties(BTreeMap<String, String>);

impl fmt::Debug for Properties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut m = f.debug_map();
        for (k, v) in &self.0 {
            m.entry(k, &if is_secret(k) { "****" } else { v.as_str() });
        }
        m.finish()
    }
}

impl Properties {
    fn from_options(o: &TableOptions) -> Result<Self> {
        let map: BTreeMap<String, String> = o
            .keys()
            .filter_map(|k| {
                let name = k.strip_prefix("properties.")?;
                Some((name.to_string(), o.get(k)?.to_string()))
            })
            .collect();
        if !map.contains_key("bootstrap.servers") {
            return Err(o.error("properties.bootstrap.servers", "is required"));
        }
        Ok(Self(map))
    }

    /// A value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A client configuration holding every property.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.0 {
            c.set(k, v);
        }
        c
    }
}

/// A `kafka` source table.
#[derive(Debug, Clone)]
pub struct KafkaSourceOptions {
    /// The table's name.
    pub table: String,
    /// 'topic' or 'topic-pattern'.
    pub topics: Topics,
    /// 'format' of the value.
    pub format: RecordFormat,
    /// 'key.format' and 'key.fields', if the key holds columns.
    pub key: Option<KeySpec>,
    /// 'value.fields-include' = 'EXCEPT_KEY': the value lacks the key's columns.
    pub except_key: bool,
    /// 'scan.startup.mode'.
    pub startup: StartupMode,
    /// 'scan.watermark.idle-timeout'.
    pub idle_timeout: Option<Duration>,
    /// 'properties.group.id' (required).
    pub group: String,
    /// `properties.*`.
    pub properties: Properties,
}

impl KafkaSourceOptions {
    /// Reads and checks the options of source table `o` with physical columns `schema`.
    pub fn parse(o: &TableOptions, schema: &SchemaRef) -> Result<Self> {
        let topics = match (o.get("topic"), o.get("topic-pattern")) {
            (Some(_), Some(_)) => {
                return Err(o.error("topic-pattern", "give 'topic' or 'topic-pattern', not both"));
            }
            (Some(t), None) => {
                let names: Vec<String> = t
                    .split(';')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if names.is_empty() {
                    return Err(o.error("topic", "names no topic"));
                }
                Topics::Names(names)
            }
            (None, Some(p)) => Topics::Pattern(p.trim().to_string()),
            (None, None) => return Err(o.error("topic", "is required (or 'topic-pattern')")),
        };
        let properties = Properties::from_options(o)?;
        let group = properties
            .get("group.id")
            .map(str::to_string)
            .ok_or_else(|| {
                o.error(
                    "properties.group.id",
                    "is required: the instances of a job split the partitions through it",
                )
            })?;
        let format = RecordFormat::parse(o, "format", o.required("format")?)?;
        let key = key_spec(o, schema)?;
        let except_key =
            o.choice_or("value.fields-include", &["all", "except_key"], "all")? == "except_key";
        if except_key && key.is_none() {
            return Err(o.error(
                "value.fields-include",
                "'EXCEPT_KEY' needs 'key.format' and 'key.fields'",
            ));
        }
        check_raw(o, "format", &format, schema, key.as_ref(), except_key)?;
        let startup = match o
            .choice_or(
                "scan.startup.mode",
                &[
                    "earliest-offset",
                    "latest-offset",
                    "group-offsets",
                    "timestamp",
                ],
                "group-offsets",
            )?
            .as_str()
        {
            "earliest-offset" => StartupMode::Earliest,
            "latest-offset" => StartupMode::Latest,
            "timestamp" => StartupMode::Timestamp(
                o.required("scan.startup.timestamp-millis")?
                    .trim()
                    .parse()
                    .map_err(|_| {
                        o.error(
                            "scan.startup.timestamp-millis",
                            "is not a number of milliseconds",
                        )
                    })?,
            ),
            _ => StartupMode::GroupOffsets,
        };
        let idle_timeout = o
            .get("scan.watermark.idle-timeout")
            .map(|v| parse_duration(v).map_err(|e| o.error("scan.watermark.idle-timeout", e)))
            .transpose()?;
        Ok(Self {
            table: o.table().to_string(),
            topics,
            format,
            key,
            except_key,
            startup,
            idle_timeout,
            group,
            properties,
        })
    }
}

/// 'sink.delivery-guarantee'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryGuarantee {
    /// Output is part of the task's transaction (needs a Kafka source).
    ExactlyOnce,
    /// Flushed at every checkpoint and at the end; may repeat after a failure.
    AtLeastOnce,
    /// Fire and forget.
    None,
}

/// 'sink.partitioner'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partitioner {
    /// By the key's murmur2 hash, as Kafka's Java client does (no key: any partition).
    Default,
    /// Each sink subtask (task) writes to one partition.
    Fixed,
    /// Partitions in turn.
    RoundRobin,
}

/// A `kafka` sink table.
#[derive(Debug, Clone)]
pub struct KafkaSinkOptions {
    /// The table's name.
    pub table: String,
    /// 'topic'.
    pub topic: String,
    /// 'format' of the value.
    pub format: RecordFormat,
    /// 'key.format' and 'key.fields'.
    pub key: Option<KeySpec>,
    /// 'sink.delivery-guarantee' (default 'at-least-once', as in Flink).
    pub guarantee: DeliveryGuarantee,
    /// 'sink.transactional-id-prefix' (required for 'exactly-once').
    pub transactional_id_prefix: Option<String>,
    /// 'sink.partitioner' (default 'default').
    pub partitioner: Partitioner,
    /// 'sink.transaction-headers' (default false; only with 'exactly-once'): every output
    /// record carries the `tidewater.*` headers naming its transaction, so a reader can
    /// tell the records of an aborted transaction from committed ones where the broker
    /// shows both. Off by default because the four headers per record double the Kafka
    /// client's CPU per record (BENCHMARKS.md).
    pub transaction_headers: bool,
    /// `properties.*`.
    pub properties: Properties,
}

impl KafkaSinkOptions {
    /// Reads and checks the options of sink table `o` with columns `schema`.
    pub fn parse(o: &TableOptions, schema: &SchemaRef) -> Result<Self> {
        if o.get("topic-pattern").is_some() {
            return Err(o.error("topic-pattern", "a sink writes to one 'topic'"));
        }
        for k in [
            "scan.startup.mode",
            "scan.startup.timestamp-millis",
            "scan.watermark.idle-timeout",
            "dead-letter.path",
            "value.fields-include",
        ] {
            if o.get(k).is_some() {
                return Err(o.error(k, "applies to a source table, not to a sink"));
            }
        }
        let topic = o.required("topic")?.trim().to_string();
        let format = RecordFormat::parse(o, "format", o.required("format")?)?;
        let key = key_spec(o, schema)?;
        check_raw(o, "format", &format, schema, None, false)?;
        let guarantee = match o
            .choice_or(
                "sink.delivery-guarantee",
                &["exactly-once", "at-least-once", "none"],
                "at-least-once",
            )?
            .as_str()
        {
            "exactly-once" => DeliveryGuarantee::ExactlyOnce,
            "none" => DeliveryGuarantee::None,
            _ => DeliveryGuarantee::AtLeastOnce,
        };
        let transactional_id_prefix = o.get("sink.transactional-id-prefix").map(str::to_string);
        if guarantee == DeliveryGuarantee::ExactlyOnce && transactional_id_prefix.is_none() {
            return Err(o.error(
                "sink.transactional-id-prefix",
                "is required with 'sink.delivery-guarantee' = 'exactly-once' (it names the \
                 transactions, so a restarted job fences its predecessor)",
            ));
        }
        let transaction_headers = o.bool_or("sink.transaction-headers", false)?;
        if transaction_headers && guarantee != DeliveryGuarantee::ExactlyOnce {
            return Err(o.error(
                "sink.transaction-headers",
                "applies only with 'sink.delivery-guarantee' = 'exactly-once' (the headers \
                 name the transaction a record belongs to)",
            ));
        }
        let partitioner = match o
            .choice_or(
                "sink.partitioner",
                &["default", "fixed", "round-robin"],
                "default",
            )?
            .as_str()
        {
            "fixed" => Partitioner::Fixed,
            "round-robin" => Partitioner::RoundRobin,
            _ => Partitioner::Default,
        };
        Ok(Self {
            table: o.table().to_string(),
            topic,
            format,
            key,
            guarantee,
            transactional_id_prefix,
            partitioner,
            transaction_headers,
            properties: Properties::from_options(o)?,
        })
    }
}

fn key_spec(o: &TableOptions, schema: &SchemaRef) -> Result<Option<KeySpec>> {
    match (o.get("key.format"), o.get("key.fields")) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(o.error("key.fields", "is required with 'key.format'")),
        (None, Some(_)) => Err(o.error("key.format", "is required with 'key.fields'")),
        (Some(f), Some(fields)) => {
            let format = RecordFormat::parse(o, "key.format", f)?;
            let fields = fields
                .split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|name| {
                    schema.index_of(name).map_err(|_| {
                        o.error(
                            "key.fields",
                            format!("'{name}' is not a physical column of the table"),
                        )
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            if fields.is_empty() {
                return Err(o.error("key.fields", "names no column"));
            }
            if format == RecordFormat::Raw
                && (fields.len() != 1 || schema.field(fields[0]).data_type() != &DataType::Utf8)
            {
                return Err(o.error(
                    "key.format",
                    "'raw' takes exactly one STRING column in 'key.fields'",
                ));
            }
            Ok(Some(KeySpec { format, fields }))
        }
    }
}

/// 'raw' holds one STRING column: the value's columns are the table's minus the key's
/// (with EXCEPT_KEY).
fn check_raw(
    o: &TableOptions,
    option: &str,
    format: &RecordFormat,
    schema: &SchemaRef,
    key: Option<&KeySpec>,
    except_key: bool,
) -> Result<()> {
    if *format != RecordFormat::Raw {
        return Ok(());
    }
    let value_columns: Vec<usize> = (0..schema.fields().len())
        .filter(|i| !(except_key && key.is_some_and(|k| k.fields.contains(i))))
        .collect();
    match value_columns.as_slice() {
        [i] if schema.field(*i).data_type() == &DataType::Utf8 => Ok(()),
        _ => Err(o.error(
            option,
            "'raw' takes a table with exactly one (non-key) STRING column",
        )),
    }
}
