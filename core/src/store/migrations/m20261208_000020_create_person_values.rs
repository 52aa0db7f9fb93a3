use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The values of the person index: for each row of `person_hours`
/// (`span` 1, `slot` the hour) and of `person_days` (`span` 24, `slot`
/// the day), one row per indexed dimension (`dim`, its rollup code) with
/// that dimension's value of every event of the row, in the row's order.
/// Funnels with filters or a breakdown on those dimensions are then
/// answered from the index. Rows indexed before this are given their
/// values by the rollup job, which redoes their hours (they are read raw
/// by such funnels meanwhile).
#[derive(DeriveIden)]
enum PersonValues {
    Table,
    ProjectId,
    Span,
    Slot,
    Dim,
    Vals,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PersonValues::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(PersonValues::ProjectId).uuid().not_null())
                    .col(
                        ColumnDef::new(PersonValues::Span)
                            .small_integer()
                            .not_null(),
                    )
                    .col(ColumnDef::new(PersonValues::Slot).big_integer().not_null())
                    .col(ColumnDef::new(PersonValues::Dim).small_integer().not_null())
                    .col(ColumnDef::new(PersonValues::Vals).blob().not_null())
                    .primary_key(
                        Index::create()
                            .col(PersonValues::ProjectId)
                            .col(PersonValues::Span)
                            .col(PersonValues::Slot)
                            .col(PersonValues::Dim),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(PersonValues::Table).to_owned())
            .await
    }
}
