use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Insights (summary, trend, anomaly), one row per project and key: a
/// regenerated insight replaces the one with the same key.
#[derive(DeriveIden)]
enum Insights {
    Table,
    Id,
    ProjectId,
    Key,
    Kind,
    Title,
    Content,
    Metadata,
    PeriodStart,
    PeriodEnd,
    GeneratedAt,
}

/// Leases of periodic jobs, so that one instance at a time runs each.
#[derive(DeriveIden)]
enum JobLeases {
    Table,
    Name,
    Holder,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Insights::Table)
                    .if_not_exists()
                    .col(uuid(Insights::Id).primary_key())
                    .col(uuid(Insights::ProjectId))
                    .col(string(Insights::Key))
                    .col(string(Insights::Kind))
                    .col(text(Insights::Title))
                    .col(text(Insights::Content))
                    .col(json(Insights::Metadata))
                    .col(big_integer(Insights::PeriodStart))
                    .col(big_integer(Insights::PeriodEnd))
                    .col(big_integer(Insights::GeneratedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_insights_project_key")
                    .table(Insights::Table)
                    .col(Insights::ProjectId)
                    .col(Insights::Key)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_insights_project_period")
                    .table(Insights::Table)
                    .col(Insights::ProjectId)
                    .col(Insights::PeriodEnd)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(JobLeases::Table)
                    .if_not_exists()
                    .col(string(JobLeases::Name).primary_key())
                    .col(string(JobLeases::Holder))
                    .col(big_integer(JobLeases::ExpiresAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(JobLeases::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Insights::Table).to_owned())
            .await
    }
}
