//! Statement parameters sent with their PostgreSQL types. Every statement of the store is an
//! unnamed one, parsed, bound and run in one round trip (`query_typed`, `execute_typed`):
//! nothing prepared stays on a server session, so a transaction pooler (PgBouncer's
//! `pool_mode = transaction`) may give each transaction another session without a statement
//! going missing or being prepared twice.

use tokio_postgres::types::{ToSql, Type};

/// A value the store sends as a statement parameter, with the type it is sent as.
pub(crate) trait Parameter: ToSql + Sync {
    /// Its PostgreSQL type.
    fn sql_type(&self) -> Type;
}

macro_rules! parameters {
    ($($rust:ty => $sql:ident),* $(,)?) => {
        $(impl Parameter for $rust {
            fn sql_type(&self) -> Type {
                Type::$sql
            }
        })*
    };
}

parameters! {
    bool => BOOL,
    i32 => INT4,
    i64 => INT8,
    String => TEXT,
    &str => TEXT,
    Vec<u8> => BYTEA,
    &[u8] => BYTEA,
    Option<i64> => INT8,
    Option<String> => TEXT,
    Vec<bool> => BOOL_ARRAY,
    Vec<i64> => INT8_ARRAY,
    Vec<Option<i64>> => INT8_ARRAY,
    Vec<String> => TEXT_ARRAY,
    Vec<&str> => TEXT_ARRAY,
    Vec<Vec<u8>> => BYTEA_ARRAY,
    Vec<&[u8]> => BYTEA_ARRAY,
}

impl<T: Parameter> Parameter for &T {
    fn sql_type(&self) -> Type {
        (**self).sql_type()
    }
}

/// The parameters of a statement with their types: `typed![a, b]` for `query_typed(sql, ..)`.
macro_rules! typed {
    ($($value:expr),* $(,)?) => {
        &[$((
            &$value as &(dyn tokio_postgres::types::ToSql + Sync),
            $crate::parameters::Parameter::sql_type(&$value),
        )),*]
    };
}
pub(crate) use typed;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_parameter_is_sent_as_the_type_its_statement_casts_it_to() {
        let name = String::from("w");
        let parameters: &[(&(dyn ToSql + Sync), Type)] = typed![name, &name, 7i64, vec![1i64], vec!["a"], Some(3i64)];
        let types: Vec<Type> = parameters.iter().map(|(_, sql_type)| sql_type.clone()).collect();
        assert_eq!(
            types,
            [
                Type::TEXT,
                Type::TEXT,
                Type::INT8,
                Type::INT8_ARRAY,
                Type::TEXT_ARRAY,
                Type::INT8
            ]
        );
    }
}
