-- A network's IPAM configuration as given at create (Driver, Options, Config entries with
-- IPRange and AuxiliaryAddresses), JSON; '{}' for networks whose pool the engine chose.
ALTER TABLE networks ADD COLUMN ipam TEXT NOT NULL DEFAULT '{}';
