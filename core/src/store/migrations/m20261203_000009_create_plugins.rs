use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Custom plugins uploaded through the admin API: the code itself, so that
/// they survive restarts and reach every instance sharing the database.
#[derive(DeriveIden)]
enum Plugins {
    Table,
    Name,
    Kind,
    Sha256,
    Code,
    Config,
    Limits,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Plugins::Table)
                    .if_not_exists()
                    .col(string(Plugins::Name).primary_key())
                    .col(string(Plugins::Kind))
                    .col(string(Plugins::Sha256))
                    .col(blob(Plugins::Code))
                    .col(json(Plugins::Config))
                    .col(json(Plugins::Limits))
                    .col(big_integer(Plugins::UpdatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Plugins::Table).to_owned())
            .await
    }
}
